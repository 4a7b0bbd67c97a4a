// Follows an event stream with npm's `eventsource` (the WHATWG EventSource
// for Node) and prints one JSON line per event.
//
// Usage: node eventsource_client.mjs URL COUNT TYPE... Prints {"open":true}
// on open, then each `message` event and each event of the given types,
// and exits after COUNT events.
import { EventSource } from "eventsource";

const [url, count, ...types] = process.argv.slice(2);
const source = new EventSource(url);
let got = 0;
source.onopen = () => console.log(JSON.stringify({ open: true }));
const print = (e) => {
  console.log(JSON.stringify({ event: e.type, data: e.data, id: e.lastEventId }));
  got += 1;
  if (got >= Number(count)) {
    source.close();
    process.exit(0);
  }
};
source.onmessage = print;
for (const type of types) source.addEventListener(type, print);
source.onerror = (e) => console.error(`error: ${e.message ?? e}`);
