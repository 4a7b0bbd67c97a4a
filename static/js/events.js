// The live event list: newest first, capped, and always rendered as text.
//
// Event data comes from anyone who can publish, so it only ever reaches the
// page through textContent: `<img src=x onerror=alert(1)>` shows as those
// characters and never becomes an element (the seed's page used innerHTML).

/** Rows kept on screen; older ones are dropped so a tab left open for days stays small. */
export const MAX_ROWS = 200;

const timeFormat = new Intl.DateTimeFormat(undefined, {
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
  hour12: false,
});

export class EventList {
  #list;
  #empty;
  #pausedNote;
  #paused = false;
  /** Rows that arrived while paused, newest last; shown on resume. */
  #held = [];

  constructor(list, empty, pausedNote) {
    this.#list = list;
    this.#empty = empty;
    this.#pausedNote = pausedNote;
  }

  /** Adds one received event at the top. */
  add(topic, event) {
    const row = renderRow(new Date(), topic, event.type, event.lastEventId, event.data);
    if (this.#paused) {
      this.#held.push(row);
      if (this.#held.length > MAX_ROWS) this.#held.shift();
      this.#pausedNote.textContent = `Paused: ${this.#held.length} new event(s) held.`;
      return;
    }
    this.#prepend([row]);
  }

  /** Pausing keeps the list still for reading; events keep being received. */
  setPaused(paused) {
    this.#paused = paused;
    this.#pausedNote.hidden = !paused;
    this.#pausedNote.textContent = 'Paused: new events are held.';
    if (!paused) {
      this.#prepend(this.#held);
      this.#held = [];
    }
  }

  clear() {
    this.#list.replaceChildren();
    this.#held = [];
    this.#pausedNote.textContent = 'Paused: new events are held.';
    this.#empty.hidden = false;
  }

  /** `rows` oldest first; each goes on top of the one before. */
  #prepend(rows) {
    if (rows.length === 0) return;
    const fragment = document.createDocumentFragment();
    for (const row of rows) fragment.prepend(row);
    this.#list.prepend(fragment);
    while (this.#list.childElementCount > MAX_ROWS) this.#list.lastElementChild.remove();
    this.#empty.hidden = true;
  }
}

/** One row; every field set with textContent. */
function renderRow(received, topic, type, id, data) {
  const row = document.createElement('li');
  row.className = 'event';
  row.dataset.type = type;
  row.append(
    cell('time', timeFormat.format(received), received.toISOString()),
    cell('topic', topic),
    cell('type', type),
    cell('id', id || '(no id)'),
    cell('data', data),
  );
  return row;
}

function cell(name, text, title) {
  const span = document.createElement('span');
  span.className = name;
  span.textContent = text;
  if (title) span.title = title;
  return span;
}
