// The Worker's entry module: instantiates wharf's wasm (built by scripts/build.sh into build/) once
// per isolate and hands it each event to the exports of workers-rs's `#[event]` functions. All
// the registry lives in the wasm (src/worker/mod.rs). Instantiation runs its `#[event(start)]`
// function, which installs the panic hook.
import wasm from "../build/index_bg.wasm";
import {
  initSync, fetch as wharfFetch, scheduled as wharfScheduled, queue as wharfQueue, __wbg_reset_state,
} from "../build/index.js";

initSync({ module: wasm });

// A trap (a Rust panic: the wasm is built with panic=abort) leaves the instance's memory in
// whatever state it stopped in. The next event gets a fresh instance rather than that one.
let trapped = false;
function check(error) {
  if (error instanceof WebAssembly.RuntimeError) {
    console.error("wharf: the wasm trapped; the next request gets a fresh instance", error);
    trapped = true;
  }
}
// A trap while a request's future is polled surfaces here, not as a rejected promise.
addEventListener("error", (event) => check(event.error));

function fresh() {
  if (trapped) {
    trapped = false;
    __wbg_reset_state();
  }
}

/** An event handler of the wasm, run on a sound instance, its trap noted for the next event. */
function guarded(handler) {
  return async (...args) => {
    fresh();
    try {
      return await handler(...args);
    } catch (error) {
      check(error);
      throw error;
    }
  };
}

export default {
  fetch: guarded(wharfFetch),
  scheduled: guarded(wharfScheduled),
  // The notifications queue's consumer (src/ops/notify.rs).
  queue: guarded(wharfQueue),
};
