// Shared harness for the browser tests: command line, Chromium launch, a tiny check runner,
// and guards every page gets (no request leaves the server's origin, no script error).
//
// The scripts are run by tests/browser.rs as `node <script>.mjs <base-url> <screenshot-dir>`
// against a real sluice server. They print one `ok`/`not ok` line per check and a closing
// `N passed, N failed` line, and exit non-zero if any check failed.

import { mkdirSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

/** Debian's Chromium; `CHROMIUM` overrides it (for a local run elsewhere). */
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/** The bound on any single wait in a check. A healthy run never comes close. */
export const WAIT_MS = 10_000;

/** The whole script must finish within this; tests/browser.rs has a longer backstop. */
const DEADLINE_MS = 50_000;

/** `node script.mjs <base-url> <screenshot-dir>` → { base, shots }. */
export function parseArgs() {
  const [base, shots] = process.argv.slice(2);
  if (!base || !shots || !/^https?:\/\//.test(base)) {
    console.error(`usage: node ${path.basename(process.argv[1])} <base-url> <screenshot-dir>`);
    process.exit(64);
  }
  mkdirSync(shots, { recursive: true });
  return { base: base.replace(/\/+$/, ""), shots };
}

/**
 * Launches headless Chromium with a fresh profile (playwright makes a temporary one), with
 * `extraArgs` added to its command line.
 */
export async function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    timeout: 20_000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      ...extraArgs,
    ],
  });
}

/**
 * Opens a page in its own context (own cookies, storage and connection pool, like a separate
 * browser) with the guards: a request to any other origin is aborted and recorded, and so is any
 * uncaught error or console error. `problems()` lists what went wrong.
 */
export async function openPage(browser, base, { viewport = { width: 1280, height: 800 } } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  context.setDefaultTimeout(WAIT_MS);
  const page = await context.newPage();
  const origin = new URL(base).origin;
  const found = [];
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith("data:") || new URL(url).origin === origin) return route.fallback();
    found.push(`request to another origin: ${url}`);
    return route.abort();
  });
  page.on("pageerror", (error) => found.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") found.push(`console error: ${message.text()}`);
  });
  page.problems = () => found;
  page.ignoreProblems = () => found.splice(0);
  return page;
}

/**
 * A check runner: `await t.check(name, fn)` runs in order and records the outcome. Checks build
 * on each other (a page that did not load cannot send a message), so after the first failure the
 * rest are skipped instead of each waiting out its own time-out.
 */
export function runner(name) {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  const started = Date.now();
  const timer = setTimeout(() => {
    console.error(`${name}: still running after ${DEADLINE_MS} ms; giving up`);
    process.exit(2);
  }, DEADLINE_MS);
  timer.unref();
  return {
    async check(title, fn) {
      if (failed) {
        skipped++;
        console.log(`skip - ${title} (after an earlier failure)`);
        return false;
      }
      const t0 = Date.now();
      try {
        await fn();
        passed++;
        console.log(`ok - ${title} (${Date.now() - t0} ms)`);
      } catch (error) {
        failed++;
        console.log(`not ok - ${title}`);
        console.log(String(error && error.stack ? error.stack : error).replace(/^/gm, "    "));
      }
      return failed === 0;
    },
    get failed() {
      return failed;
    },
    finish() {
      clearTimeout(timer);
      console.log(`${name}: ${Date.now() - started} ms`);
      console.log(`${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""));
      process.exitCode = failed ? 1 : 0;
    },
  };
}

/** Throws with `message` unless `condition` holds. */
export function assert(condition, message) {
  if (!condition) throw new Error(message);
}

/** Waits until `fn(arg)` (run in the page) is truthy, with a clear message on time-out. */
export async function waitFor(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 50 });
  } catch (error) {
    throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`, { cause: error });
  }
}

/**
 * Records every change of `#status`'s data-state from the first parse on, in
 * `window.statusLog` (call before the page loads).
 */
export async function recordStatus(page) {
  await page.addInitScript(() => {
    window.statusLog = [];
    new MutationObserver(() => {
      const state = document.getElementById("status")?.dataset.state;
      if (state && window.statusLog.at(-1) !== state) window.statusLog.push(state);
    }).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
  });
}

/**
 * Watches the headers the page sends on the wire (interception does not show those the network
 * stack adds, such as Last-Event-ID). Returns a function giving the first Last-Event-ID sent:
 * only a resuming EventSource sends one.
 */
export async function firstLastEventId(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  let sent;
  cdp.on("Network.requestWillBeSentExtraInfo", ({ headers }) => {
    sent ??= headers["Last-Event-ID"] ?? headers["last-event-id"];
  });
  return () => sent;
}

/** Loads `url` in `page` and fails unless the server answers 200. */
export async function visit(page, url) {
  const response = await page.goto(url);
  assert(response && response.status() === 200, `GET ${url} answered ${response && response.status()}`);
}

/** Saves a screenshot as `<dir>/<name>.png` and returns the path. */
export async function screenshot(page, shots, name) {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file });
  console.log(`screenshot: ${file}`);
  return file;
}
