// Browser test of the chat page (GET /chat): two users in one room see each other arrive, see
// each other's messages live (as text, never as HTML), a late joiner gets the room's history,
// and closing a tab shows `userLeft` to the others.
//
// Usage: node chat.mjs <base-url> <screenshot-dir>   (run by tests/browser.rs)

import {
  assert,
  launch,
  openPage,
  parseArgs,
  recordStatus,
  runner,
  screenshot,
  visit,
  waitFor,
} from "./lib.mjs";

const { base, shots } = parseArgs();
const t = runner("chat");
const browser = await launch();

/** A room of its own, so reruns against one server never see old history. */
const room = `lobby-${Date.now().toString(36)}`;
/** Text that would be markup if the page ever used innerHTML. */
const HOSTILE = `<b>bold?</b> <img src=x onerror="window.pwned=1"> & "quotes" 'too'`;

/** The names in the presence list. */
const users = (page) => page.$$eval("#users li", (items) => items.map((item) => item.dataset.user));

/** Waits until the presence list is exactly `names` (in any order). */
function usersAre(page, names, who) {
  return waitFor(
    page,
    `${who}'s presence list to be [${names}]`,
    (names) => {
      const shown = [...document.querySelectorAll("#users li")].map((item) => item.dataset.user).sort();
      return JSON.stringify(shown) === JSON.stringify([...names].sort());
    },
    names,
  );
}

/** Waits until `page` shows a message from `author` whose text is exactly `text`. */
function seesMessage(page, author, text, who) {
  return waitFor(
    page,
    `${who} to see ${author}'s message ${JSON.stringify(text.slice(0, 40))}`,
    ({ author, text }) =>
      [...document.querySelectorAll("#messages li.message")].some(
        (item) => item.dataset.user === author && item.querySelector(".text").textContent === text,
      ),
    { author, text },
  );
}

/** Types `text` into the send box and sends it with Enter or the button. */
async function say(page, text, { enter = false } = {}) {
  await page.fill("#message", text);
  if (enter) await page.press("#message", "Enter");
  else await page.click("#send");
  await waitFor(page, "the send box to clear", () => document.getElementById("message").value === "");
}

let alice, bob, carol;
try {
  await t.check("GET /chat serves one self-contained HTML page", async () => {
    const response = await fetch(base + "/chat");
    assert(response.status === 200, `status ${response.status}`);
    const type = response.headers.get("content-type");
    assert(/^text\/html;\s*charset=utf-8$/i.test(type), `content-type ${type}`);
    const html = await response.text();
    assert(html.includes('id="join-form"'), "no #join-form in the page");
    const external = html.match(/(?:src|href)\s*=\s*["']?(?:https?:)?\/\/[^"'\s>]+/gi);
    assert(!external, `external references: ${external}`);
  });

  await t.check("alice joins with the form and sees herself present", async () => {
    alice = await openPage(browser, base, { viewport: { width: 1100, height: 720 } });
    await visit(alice, base + "/chat");
    await alice.fill("#name", "alice");
    await alice.fill("#room", room);
    await alice.click("#join-button");
    await waitFor(alice, "alice's status `connected`", () => document.getElementById("status").textContent === "connected");
    await usersAre(alice, ["alice"], "alice");
    const url = new URL(alice.url());
    assert(url.searchParams.get("room") === room && url.searchParams.get("user") === "alice", `address bar: ${url}`);
  });

  await t.check("the form refuses an invalid name without connecting", async () => {
    const page = await openPage(browser, base);
    await visit(page, base + "/chat");
    await page.fill("#name", "no spaces allowed");
    await page.click("#join-button");
    const error = await page.textContent("#join-error");
    assert(/name/i.test(error), `join error: ${JSON.stringify(error)}`);
    assert(await page.isHidden("#chat"), "the chat view opened anyway");
    await page.context().close();
  });

  await t.check("bob joins by address; both presence lists show alice and bob", async () => {
    bob = await openPage(browser, base, { viewport: { width: 1100, height: 720 } });
    await visit(bob, `${base}/chat?room=${room}&user=bob`);
    await waitFor(bob, "bob's status `connected`", () => document.getElementById("status").textContent === "connected");
    await usersAre(bob, ["alice", "bob"], "bob");
    await usersAre(alice, ["alice", "bob"], "alice");
    await waitFor(alice, "alice to see bob's userJoined notice", () =>
      document.querySelector('#messages li.notice[data-kind="userJoined"][data-user="bob"]'),
    );
  });

  await t.check("bob's message reaches alice live, as text", async () => {
    await say(bob, "Hi alice! Is the deploy done?");
    await seesMessage(alice, "bob", "Hi alice! Is the deploy done?", "alice");
    await seesMessage(bob, "bob", "Hi alice! Is the deploy done?", "bob");
  });

  await t.check("alice answers with Enter; markup in a message stays text", async () => {
    await say(alice, "Yes, 0.1.0 is live.", { enter: true });
    await seesMessage(bob, "alice", "Yes, 0.1.0 is live.", "bob");
    await say(bob, HOSTILE);
    await seesMessage(alice, "bob", HOSTILE, "alice");
    const injected = await alice.evaluate(() => ({
      elements: document.querySelectorAll("#messages .text b, #messages .text img").length,
      pwned: window.pwned === 1,
    }));
    assert(injected.elements === 0 && !injected.pwned, `user text became markup: ${JSON.stringify(injected)}`);
    await say(alice, "Nice try, bob. Ça marche : déployé à 100 %.");
    await seesMessage(bob, "alice", "Nice try, bob. Ça marche : déployé à 100 %.", "bob");
  });

  await t.check("a message over 2000 characters cannot be sent", async () => {
    await alice.fill("#message", "x".repeat(2001));
    assert(await alice.isDisabled("#send"), "send is enabled for 2001 characters");
    const count = await alice.textContent("#count");
    assert(count.includes("2001 / 2000"), `counter shows ${JSON.stringify(count)}`);
    await alice.fill("#message", "");
  });

  await t.check("carol joins late and gets the room's history", async () => {
    carol = await openPage(browser, base, { viewport: { width: 1100, height: 720 } });
    await visit(carol, `${base}/chat?room=${room}&user=carol`);
    await seesMessage(carol, "bob", "Hi alice! Is the deploy done?", "carol");
    await seesMessage(carol, "alice", "Nice try, bob. Ça marche : déployé à 100 %.", "carol");
    const ids = await carol.$$eval("#messages li.message", (items) => items.map((item) => item.dataset.id));
    assert(ids.length === 4 && new Set(ids).size === 4, `carol's history: ${ids}`);
    await usersAre(carol, ["alice", "bob", "carol"], "carol");
    await usersAre(alice, ["alice", "bob", "carol"], "alice");
  });

  await t.check("a screenshot of the conversation", async () => {
    await say(carol, "Morning all. Reading the history now.");
    await seesMessage(alice, "carol", "Morning all. Reading the history now.", "alice");
    await screenshot(alice, shots, "chat");
  });

  await t.check("bob closes his tab: alice and carol see userLeft", async () => {
    await bob.context().close();
    bob = null;
    for (const [page, who] of [
      [alice, "alice"],
      [carol, "carol"],
    ]) {
      await waitFor(page, `${who} to see bob's userLeft notice`, () =>
        document.querySelector('#messages li.notice[data-kind="userLeft"][data-user="bob"]'),
      );
      await usersAre(page, ["alice", "carol"], who);
    }
    console.log(`    alice now sees: ${(await users(alice)).join(", ")}`);
  });

  await t.check("dave's stream drops and resumes with the last event id; nothing shows twice", async () => {
    // Dave's first stream is a stand-in that replays the room's first message and ends; the
    // client then reconnects to the real server by itself, sending that message's id.
    const first = await alice.$eval("#messages li.message", (item) => ({
      id: item.dataset.id,
      userId: item.dataset.user,
      message: item.querySelector(".text").textContent,
      timestamp: item.querySelector("time").dateTime,
    }));
    const expected = await alice.$$eval("#messages li.message", (items) => items.map((item) => item.dataset.id));
    const dave = await openPage(browser, base, { viewport: { width: 1100, height: 720 } });
    await recordStatus(dave);
    // sluice.js resumes with the `lastEventId` query parameter (it reconnects by itself).
    let resumed;
    const resumedWith = () => resumed;
    let calls = 0;
    await dave.route((url) => url.pathname === `/chat/${room}`, (route) => {
      if (++calls > 1) {
        resumed ??= new URL(route.request().url()).searchParams.get("lastEventId") ?? undefined;
        return route.fallback();
      }
      const message = { ...first, roomId: room };
      const body =
        `retry: 300\nevent: connected\ndata: {"connectionId":"stand-in"}\n\n` +
        `event: message\nid: ${first.id}\ndata: ${JSON.stringify(message)}\n\n`;
      return route.fulfill({ status: 200, contentType: "text/event-stream", body });
    });
    await visit(dave, `${base}/chat?room=${room}&user=dave`);
    await usersAre(dave, ["alice", "carol", "dave"], "dave");
    await seesMessage(dave, "carol", "Morning all. Reading the history now.", "dave");
    const log = await dave.evaluate(() => window.statusLog);
    const ids = await dave.$$eval("#messages li.message", (items) => items.map((item) => item.dataset.id));
    console.log(`    status log: ${log.join(" → ")}; resumed with lastEventId ${resumedWith()}; messages ${ids.length}`);
    assert(log.join(" ").includes("connected reconnecting") && log.at(-1) === "connected", `status log ${log.join(" → ")}`);
    assert(resumedWith() === first.id, `resumed with lastEventId ${resumedWith()}, not ${first.id}`);
    assert(JSON.stringify(ids) === JSON.stringify(expected), `dave shows ${ids}, alice ${expected}`);
    assert(dave.problems().length === 0, dave.problems().join("\n"));
    await dave.context().close();
  });

  await t.check("no request left the server's origin and no script error", async () => {
    const problems = [...alice.problems(), ...carol.problems()];
    assert(problems.length === 0, problems.join("\n"));
  });
} finally {
  await browser.close();
  t.finish();
}
