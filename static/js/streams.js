// One EventSource per subscribed topic, and the overall connection state
// derived from them.
//
// Why one per topic: the event-stream wire format carries no topic, so a
// single stream subscribed to several topics could not say which topic an
// event came from. Browsers allow only 6 HTTP/1.1 connections per host,
// which the stats poll and publishing share, hence MAX_TOPICS.

/** Most topics subscribed at once (each is one of the 6 per-host connections). */
export const MAX_TOPICS = 4;

/**
 * Event types listened for from the start. EventSource dispatches a named
 * event only to listeners registered for that name, so other types are added
 * with `listen()` (the page does so for every type it publishes).
 */
const BASE_TYPES = ['message', 'tick', 'too-old'];

/** Wait before re-creating a stream the browser gave up on (HTTP error such as 503). */
const REOPEN_AFTER_MS = 3000;

/**
 * Per-topic states: `connecting` (never opened yet), `live`, `reconnecting`
 * (the browser is retrying after the stream broke or the server went away).
 */
export class Subscriptions {
  #streams = new Map();
  #types = new Set(BASE_TYPES);
  #onEvent;
  #onState;
  #lastEventId = '';
  #token = '';

  /**
   * @param {(topic: string, event: MessageEvent) => void} onEvent
   * @param {(state: {state: string, lastEventId: string, topics: string[]}) => void} onState
   */
  constructor(onEvent, onState) {
    this.#onEvent = onEvent;
    this.#onState = onState;
  }

  /** The topics currently subscribed, in order. */
  get topics() {
    return [...this.#streams.keys()];
  }

  /** Subscribes to exactly `topics`: closes streams no longer wanted, opens new ones. */
  setTopics(topics) {
    for (const [topic, stream] of this.#streams) {
      if (!topics.includes(topic)) {
        this.#close(stream);
        this.#streams.delete(topic);
      }
    }
    for (const topic of topics) {
      if (!this.#streams.has(topic)) {
        const stream = { topic, source: null, state: 'connecting', lastId: '', reopen: 0 };
        this.#streams.set(topic, stream);
        this.#open(stream);
      }
    }
    this.#report();
  }

  /**
   * Subscribes with `token` (a JWT, sent as `?access_token=`: EventSource
   * cannot set headers) from now on; open streams reconnect with it.
   */
  setToken(token) {
    if (token === this.#token) return;
    this.#token = token;
    for (const stream of this.#streams.values()) {
      this.#close(stream);
      stream.state = 'connecting';
      this.#open(stream);
    }
    this.#report();
  }

  /** Also show events of `type` from now on (on every stream, open or future). */
  listen(type) {
    if (this.#types.has(type)) return;
    this.#types.add(type);
    for (const stream of this.#streams.values()) {
      stream.source?.addEventListener(type, stream.handler);
    }
  }

  #open(stream) {
    const params = new URLSearchParams({ topic: stream.topic });
    // A stream re-created by us (not by the browser's own reconnection) cannot
    // send Last-Event-ID, so it resumes through the query parameter instead.
    if (stream.lastId) params.set('lastEventId', stream.lastId);
    if (this.#token) params.set('access_token', this.#token);
    const source = new EventSource(`sse?${params}`);
    stream.source = source;
    stream.handler = (event) => {
      // A listener for a user type named "open" or "error" also hears the
      // EventSource's own open/error events, which are not MessageEvents.
      if (!(event instanceof MessageEvent)) return;
      if (event.lastEventId) {
        stream.lastId = event.lastEventId;
        this.#lastEventId = event.lastEventId;
      }
      this.#onEvent(stream.topic, event);
      this.#report();
    };
    // `onmessage` only gets unnamed events; listeners cover the named ones.
    source.onmessage = stream.handler;
    for (const type of this.#types) {
      if (type !== 'message') source.addEventListener(type, stream.handler);
    }
    source.onopen = () => {
      stream.state = 'live';
      this.#report();
    };
    source.onerror = (event) => {
      // An event the server named "error" is data, not a connection error.
      if (event instanceof MessageEvent) return;
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up for good (an HTTP error such as 503 when the
        // server is full, or a wrong content type): try again ourselves.
        stream.state = 'reconnecting';
        clearTimeout(stream.reopen);
        stream.reopen = setTimeout(() => {
          if (this.#streams.get(stream.topic) === stream) this.#open(stream);
        }, REOPEN_AFTER_MS);
      } else {
        // CONNECTING: the browser reconnects by itself after the server's
        // `retry:` delay, sending Last-Event-ID so nothing is missed.
        stream.state = stream.state === 'connecting' ? 'connecting' : 'reconnecting';
      }
      this.#report();
    };
  }

  #close(stream) {
    clearTimeout(stream.reopen);
    stream.source?.close();
  }

  #report() {
    const states = [...this.#streams.values()].map((s) => s.state);
    let state = 'live';
    if (states.length === 0) state = 'idle';
    else if (states.includes('reconnecting')) state = 'reconnecting';
    else if (states.includes('connecting')) state = 'connecting';
    this.#onState({ state, lastEventId: this.#lastEventId, topics: this.topics });
  }
}

/**
 * Parses the topics field: comma-separated, trimmed, without duplicates or
 * empty names. Returns `{topics}` or `{error}`.
 */
export function parseTopics(text) {
  const topics = [...new Set(text.split(',').map((t) => t.trim()).filter((t) => t !== ''))];
  if (topics.length === 0) return { error: 'Name at least one topic.' };
  if (topics.length > MAX_TOPICS) {
    return { error: `At most ${MAX_TOPICS} topics: a browser opens only 6 connections per server.` };
  }
  const tooLong = topics.find((t) => new TextEncoder().encode(t).length > 256);
  if (tooLong !== undefined) return { error: 'Topic names are at most 256 bytes.' };
  return { topics };
}
