// Drives the real @fal-ai/client from node against a local falkit server:
//   node node_client.mjs http://127.0.0.1:PORT scenario [scenario ...]
// prints one JSON line: {scenario: {ok, value | error}}.
import { fal } from "@fal-ai/client";

import { localWebSocket, runScenarios } from "./scenarios.js";

const WATCHDOG_MS = 120_000;
const [serverUrl, ...names] = process.argv.slice(2);

const watchdog = setTimeout(() => {
  console.error(`node_client: still running after ${WATCHDOG_MS} ms, giving up`);
  process.exit(3);
}, WATCHDOG_MS);

// Node 18 has no global `crypto` (fal-js's realtime names its connections with it), and
// node before 22 no global WebSocket: the `ws` package stands in.
globalThis.crypto ??= (await import("node:crypto")).webcrypto;
const Native = globalThis.WebSocket ?? (await import("ws")).WebSocket;
globalThis.WebSocket = localWebSocket(serverUrl, Native);
// Outside a browser fal-js skips the proxy unless told `when: "always"`.
fal.config({ proxyUrl: { url: `${serverUrl}/.fal/proxy`, when: "always" } });

const results = await runScenarios(fal, names);
clearTimeout(watchdog);
// Exit at once: a realtime socket or a keep-alive connection must not keep node waiting.
process.stdout.write(`${JSON.stringify(results)}\n`, () => process.exit(0));
