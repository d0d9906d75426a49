// The @fal-ai/client calls tests/test_fal_js.py checks, shared by node (node_client.mjs)
// and the browser (browser_entry.js). Each scenario takes the configured `fal` singleton
// and returns plain JSON for Python to assert on; nothing here decides pass or fail.

export const APP = "local/js-app";
const SCENARIO_TIMEOUT_MS = 20_000;
const POLL_STEP_MS = 20;

/**
 * fal-js opens realtime sessions at `wss://fal.run/<app>/realtime` with the global
 * `WebSocket`; this WebSocket class sends that URL to the local server instead. The same
 * few lines are in the README: `globalThis.WebSocket = localWebSocket("http://127.0.0.1:8000")`.
 */
export function localWebSocket(serverUrl, Native = globalThis.WebSocket) {
  const local = serverUrl.replace(/^http/, "ws").replace(/\/?$/, "/");
  return class extends Native {
    constructor(url, protocols) {
      super(String(url).replace(/^wss:\/\/fal\.run\//, local), protocols);
    }
  };
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function until(probe, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_STEP_MS));
  }
}

function describeError(error) {
  return {
    name: error?.name ?? typeof error,
    message: String(error?.message ?? error),
    status: error?.status ?? null,
    body: error?.body ?? null,
  };
}

async function probe(fal) {
  return (await fal.run(APP, { path: "/probe", input: { ask: true } })).data;
}

async function subscribe(fal, mode) {
  const statuses = [];
  let enqueued = null;
  const result = await fal.subscribe(APP, {
    input: { prompt: "subscribe" },
    path: "/slow",
    mode,
    pollInterval: 50,
    logs: true,
    onEnqueue: (id) => (enqueued = id),
    onQueueUpdate: (update) => statuses.push(update.status),
  });
  return { data: result.data, enqueued, statuses };
}

export const scenarios = {
  async run(fal) {
    const result = await fal.run(APP, { input: { prompt: "hi" } });
    return { data: result.data };
  },

  async run_error(fal) {
    try {
      await fal.run(APP, { input: { wrong: 1 } });
      return { resolved: true };
    } catch (error) {
      const fields = (error.fieldErrors ?? []).map((e) => e.loc.at(-1));
      return { ...describeError(error), fields };
    }
  },

  async request_ids(fal) {
    const run = await fal.run(APP, { input: { prompt: "id" } });
    const sub = await subscribe(fal, undefined);
    const result = await fal.queue.result(APP, { requestId: sub.enqueued });
    return { run: run.requestId, enqueued: sub.enqueued, result: result.requestId };
  },

  subscribe_polling: (fal) => subscribe(fal, "polling"),

  subscribe_streaming: (fal) => subscribe(fal, "streaming"),

  async stream(fal) {
    const stream = await fal.stream(APP, { input: { prompt: "abc" } });
    const events = [];
    for await (const event of stream) events.push(event);
    const done = await stream.done();
    return { events, done };
  },

  async queue(fal) {
    const submitted = await fal.queue.submit(APP, { input: { prompt: "queue" }, path: "/slow" });
    const requestId = submitted.request_id;
    const first = await fal.queue.status(APP, { requestId, logs: true });
    const done = await until(async () => {
      const status = await fal.queue.status(APP, { requestId });
      return status.status === "COMPLETED" && status;
    }, "COMPLETED");
    const result = await fal.queue.result(APP, { requestId });
    return {
      submitted: submitted.status,
      hasRequestId: typeof requestId === "string" && requestId.length > 0,
      first: first.status,
      done: done.status,
      data: result.data,
    };
  },

  async cancel(fal) {
    const { request_id: requestId } = await fal.queue.submit(APP, {
      input: { prompt: "never" },
      path: "/gate",
    });
    await until(async () => (await probe(fal)).entered, "the handler to start");
    await fal.queue.cancel(APP, { requestId });
    const state = await until(async () => {
      const seen = await probe(fal);
      return seen.cancelled && seen;
    }, "the handler to be cancelled");
    let result;
    try {
      result = { resolved: (await fal.queue.result(APP, { requestId })).data };
    } catch (error) {
      result = describeError(error);
    }
    return { cancelled: state.cancelled, finished: state.finished, result };
  },

  async realtime(fal) {
    const outputs = [];
    await new Promise((resolve, reject) => {
      const connection = fal.realtime.connect(APP, {
        throttleInterval: 0,
        onResult: (output) => {
          outputs.push(output);
          if (outputs.length === 1) {
            connection.send({ prompt: "bc" });
          } else {
            connection.close();
            resolve();
          }
        },
        onError: (error) => reject(error),
      });
      connection.send({ prompt: "a" });
    });
    return { outputs };
  },

  async storage_upload(fal) {
    const url = await fal.storage.upload(new Blob(["hello from fal-js"], { type: "text/plain" }));
    const back = await fetch(url);
    return {
      url,
      status: back.status,
      type: back.headers.get("content-type"),
      text: await back.text(),
    };
  },

  async blob_input(fal) {
    // fal-js uploads a Blob found in the input first and sends its URL instead.
    const file = new Blob(["blob in the input"], { type: "text/plain" });
    const result = await fal.run(APP, { path: "/file", input: { file } });
    const back = await fetch(result.data.url);
    return { url: result.data.url, text: await back.text() };
  },

  async refused(fal) {
    const outcome = {};
    for (const [name, call] of [
      ["run", () => fal.run(APP, { input: { prompt: "no" } })],
      ["submit", () => fal.queue.submit(APP, { input: { prompt: "no" } })],
      ["upload", () => fal.storage.upload(new Blob(["no"], { type: "text/plain" }))],
    ]) {
      try {
        outcome[name] = { resolved: await call() };
      } catch (error) {
        outcome[name] = describeError(error);
      }
    }
    return outcome;
  },
};

/** Each named scenario's `{ok: true, value}` or `{ok: false, error}`, one at a time. */
export async function runScenarios(fal, names) {
  const results = {};
  for (const name of names) {
    const scenario = scenarios[name];
    if (!scenario) {
      results[name] = { ok: false, error: { name: "Error", message: `no scenario ${name}` } };
      continue;
    }
    try {
      const value = await withTimeout(scenario(fal), SCENARIO_TIMEOUT_MS, name);
      results[name] = { ok: true, value };
    } catch (error) {
      results[name] = { ok: false, error: describeError(error) };
    }
  }
  return results;
}
