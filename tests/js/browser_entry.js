// The page's script, bundled by esbuild in tests/test_fal_js.py: the real @fal-ai/client
// configured as a web front end would configure it, and the scenarios to run on demand.
import { fal } from "@fal-ai/client";

import { localWebSocket, runScenarios } from "./scenarios.js";

window.falkitJs = {
  run(serverUrl, names) {
    globalThis.WebSocket = localWebSocket(serverUrl);
    fal.config({ proxyUrl: `${serverUrl}/.fal/proxy` });
    return runScenarios(fal, names);
  },
};
