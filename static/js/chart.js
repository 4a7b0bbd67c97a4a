// The live chart: events per second and connected clients, from `/stats`.
//
// `/stats` returns counters since the server started, so rates come from
// the difference between two polls. uPlot (vendored, global `uPlot`) draws.

/** Poll period: one point per second reads well and costs the server nothing. */
const POLL_MS = 1000;
/** Points kept: two minutes at one per second. */
const MAX_POINTS = 120;

export class StatsChart {
  #el;
  #tiles;
  #errorNote;
  #plot = null;
  #data = [[], [], [], []]; // time (s), published/s, delivered/s, clients
  #previous = null;

  /**
   * @param {HTMLElement} el the chart container
   * @param {{rate: HTMLElement, clients: HTMLElement, published: HTMLElement, delivered: HTMLElement}} tiles
   * @param {HTMLElement} errorNote
   */
  constructor(el, tiles, errorNote) {
    this.#el = el;
    this.#tiles = tiles;
    this.#errorNote = errorNote;
  }

  start() {
    if (typeof window.uPlot === 'function') {
      this.#plot = new window.uPlot(this.#options(), this.#data, this.#el);
      // Follow the container's width (laptop, phone, rotating a phone).
      new ResizeObserver(() => this.#resize()).observe(this.#el);
    } else {
      this.#showError('The chart library did not load; numbers still update.');
    }
    this.#poll();
  }

  async #poll() {
    try {
      const response = await fetch('stats', { cache: 'no-store' });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      this.#record(await response.json(), performance.now());
      this.#errorNote.hidden = true;
    } catch (error) {
      // The server is down or restarting: leave a gap rather than a fake zero.
      this.#previous = null;
      this.#push(Date.now() / 1000, null, null, null);
      this.#showError(`Stats unavailable (${error.message}); retrying.`);
    }
    setTimeout(() => this.#poll(), POLL_MS);
  }

  #record(stats, now) {
    const previous = this.#previous;
    this.#previous = { stats, now };
    let published = null;
    let delivered = null;
    // A restart resets the counters (uptime goes back): start a new baseline.
    if (previous && stats.uptime_ms >= previous.stats.uptime_ms) {
      const seconds = Math.max((now - previous.now) / 1000, 0.001);
      published = (stats.published - previous.stats.published) / seconds;
      delivered = (stats.delivered - previous.stats.delivered) / seconds;
    }
    this.#push(Date.now() / 1000, published, delivered, stats.clients);
    this.#tiles.rate.textContent = published === null ? '–' : formatRate(published);
    this.#tiles.clients.textContent = String(stats.clients);
    this.#tiles.published.textContent = stats.published.toLocaleString();
    this.#tiles.delivered.textContent = stats.delivered.toLocaleString();
  }

  #push(...point) {
    point.forEach((value, i) => {
      this.#data[i].push(value);
      if (this.#data[i].length > MAX_POINTS) this.#data[i].shift();
    });
    // Tests and curious users can see the chart is being fed.
    this.#el.dataset.points = String(this.#data[0].length);
    this.#plot?.setData(this.#data);
  }

  #showError(text) {
    this.#errorNote.textContent = text;
    this.#errorNote.hidden = false;
  }

  #size() {
    const width = Math.max(this.#el.clientWidth, 200);
    return { width, height: Math.round(Math.min(220, Math.max(160, width * 0.45))) };
  }

  #resize() {
    const size = this.#size();
    if (this.#plot && (this.#plot.width !== size.width || this.#plot.height !== size.height)) {
      this.#plot.setSize(size);
    }
  }

  #options() {
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue(name).trim();
    const text = color('--muted');
    const grid = { stroke: color('--grid'), width: 1 };
    const ticks = { stroke: color('--grid'), width: 1 };
    // Axes start at zero: a rate or a count is read against zero.
    const fromZero = (_u, _min, max) => [0, Math.max(1, Math.ceil((max ?? 1) * 1.15))];
    return {
      ...this.#size(),
      cursor: { drag: { x: false, y: false } },
      // Values appear in the legend only while hovering; otherwise it names the lines.
      legend: { live: false },
      scales: { x: { time: true }, rate: { range: fromZero }, clients: { range: fromZero } },
      series: [
        {},
        {
          label: 'published/s',
          scale: 'rate',
          stroke: color('--accent'),
          fill: color('--accent-fill'),
          width: 2,
          value: (_u, v) => (v == null ? '–' : formatRate(v)),
        },
        {
          label: 'delivered/s',
          scale: 'rate',
          stroke: color('--accent-2'),
          width: 1.5,
          dash: [6, 4],
          value: (_u, v) => (v == null ? '–' : formatRate(v)),
        },
        {
          label: 'clients',
          scale: 'clients',
          stroke: color('--accent-3'),
          width: 2,
          paths: window.uPlot.paths.stepped({ align: 1 }),
          value: (_u, v) => (v == null ? '–' : String(v)),
        },
      ],
      axes: [
        { stroke: text, grid, ticks },
        { scale: 'rate', label: 'events/s', stroke: text, grid, ticks, size: 48 },
        { scale: 'clients', label: 'clients', side: 1, stroke: text, grid: { show: false }, ticks, size: 44 },
      ],
    };
  }
}

function formatRate(value) {
  return value >= 100 ? Math.round(value).toLocaleString() : value.toFixed(1);
}
