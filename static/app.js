// Wires the page together: subscriptions feed the event list and the
// connection state; the forms change topics and publish; the chart polls
// /stats. No build step: plain ES modules served by the server.

import { Subscriptions, parseTopics } from './js/streams.js';
import { EventList } from './js/events.js';
import { StatsChart } from './js/chart.js';
import { setUpPublishForm } from './js/publish.js';

const $ = (id) => document.getElementById(id);

const events = new EventList($('events'), $('events-empty'), $('paused-note'));

const STATE_LABELS = {
  idle: 'not subscribed',
  connecting: 'connecting',
  live: 'live',
  reconnecting: 'reconnecting',
};

let shownState = '';
function showState({ state, lastEventId }) {
  // Only touch the live region when the state changes, so screen readers
  // announce "reconnecting" / "live" and not every tick.
  if (state !== shownState) {
    shownState = state;
    $('state').dataset.state = state;
    $('state-text').textContent = STATE_LABELS[state] ?? state;
  }
  $('last-id').textContent = lastEventId || '–';
}

const subscriptions = new Subscriptions((topic, event) => events.add(topic, event), showState);

// Topics come from the address (?topic=a&topic=b) so a view can be shared or
// bookmarked; `default` otherwise, as for the server itself.
function topicsFromAddress() {
  const params = new URLSearchParams(location.search);
  const parsed = parseTopics(params.getAll('topic').join(','));
  return parsed.topics ?? ['default'];
}

function subscribe(topics) {
  subscriptions.setTopics(topics);
  $('topics').value = topics.join(', ');
  const params = new URLSearchParams(location.search);
  params.delete('topic');
  for (const topic of topics) params.append('topic', topic);
  history.replaceState(null, '', `?${params}`);
  // Publishing goes to a subscribed topic by default, so it shows up below.
  const publishTopic = $('pub-topic');
  if (!topics.includes(publishTopic.value)) publishTopic.value = topics[0];
}

// Extra event types to show from the start (?type=a&type=b): EventSource
// only delivers named types that have a listener.
for (const type of new URLSearchParams(location.search).getAll('type')) {
  if (type) subscriptions.listen(type);
}

$('topics-form').addEventListener('submit', (submit) => {
  submit.preventDefault();
  const parsed = parseTopics($('topics').value);
  const message = $('topics-msg');
  if (parsed.error) {
    message.dataset.kind = 'error';
    message.textContent = parsed.error;
    return;
  }
  subscriptions.setToken($('token').value.trim());
  subscribe(parsed.topics);
  message.dataset.kind = 'ok';
  message.textContent = `Subscribed to ${parsed.topics.join(', ')}.`;
});

setUpPublishForm($('publish-form'), $('publish-result'), {
  beforePublish(topic, type) {
    subscriptions.listen(type);
    return subscriptions.topics.includes(topic)
      ? ''
      : `(topic "${topic}" is not subscribed, so it will not show here)`;
  },
  token: () => $('token').value,
});

const pause = $('pause');
pause.addEventListener('click', () => {
  const paused = pause.getAttribute('aria-pressed') !== 'true';
  pause.setAttribute('aria-pressed', String(paused));
  pause.textContent = paused ? 'Resume' : 'Pause';
  events.setPaused(paused);
});
$('clear').addEventListener('click', () => events.clear());

subscribe(topicsFromAddress());

new StatsChart(
  $('chart'),
  {
    rate: $('stat-rate'),
    clients: $('stat-clients'),
    published: $('stat-published'),
    delivered: $('stat-delivered'),
  },
  $('stats-error'),
).start();
