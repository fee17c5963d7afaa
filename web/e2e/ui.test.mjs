// Browser tests of the web UI against a running, seeded prl (see tests/web/main.rs, which starts
// the stack and passes PRL_URL, PRL_TOKEN, PRL_SEED and PRL_SCREENSHOTS, and PRL_PROTECTED_URL, a
// second stack whose reads need the token). Playwright drives
// Debian's Chromium (CHROMIUM overrides the path); every test saves a screenshot.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.PRL_URL;
const seed = JSON.parse(process.env.PRL_SEED ?? "{}");
const shots = process.env.PRL_SCREENSHOTS ?? ".";
if (!base) throw new Error("PRL_URL is not set: run this through `cargo test -p prl-integration-tests --test web_ui`");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
const page = await context.newPage();
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => m.type() === "error" && !/Failed to load resource/.test(m.text()) && problems.push(`console: ${m.text()}`));
page.on("dialog", (d) => d.accept());
// Offline: every request the UI makes goes to prl itself.
const foreign = new Set();
const ours = [base, process.env.PRL_PROTECTED_URL, "data:"];
page.on("request", (r) => !ours.some((prefix) => r.url().startsWith(prefix)) && foreign.add(r.url()));
page.setDefaultTimeout(15000);

const results = [];
async function test(name, body) {
  const started = Date.now();
  try {
    await body();
    results.push({ name, ok: true });
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    results.push({ name, ok: false });
    console.log(`FAIL ${name}\n     ${String(e.stack ?? e).split("\n").slice(0, 6).join("\n     ")}`);
  } finally {
    const file = join(shots, `${name.replace(/[^a-z0-9]+/gi, "-").toLowerCase()}.png`);
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
  }
}

/** How many pixels of the canvases under `selector` are painted (not transparent or white). */
const paintedPixels = (selector) =>
  page.evaluate((sel) => {
    let painted = 0;
    for (const canvas of document.querySelectorAll(sel)) {
      const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 0; i < data.length; i += 4) if (data[i + 3] > 0 && (data[i] < 250 || data[i + 1] < 250 || data[i + 2] < 250)) painted++;
    }
    return painted;
  }, selector);

const [first, second] = seed.finished;

await test("experiments list shows status and stage progress", async () => {
  await page.goto(`${base}/`);
  const rows = page.locator("table.experiments tbody tr");
  await rows.first().waitFor();
  assert.equal(await rows.count(), 9);
  const done = page.locator(`tr[data-id="${first.id}"]`);
  assert.equal(await done.locator(".badge").innerText(), "completed");
  assert.equal(await done.locator("progress").getAttribute("value"), "60");
  assert.match(await done.locator("progress").getAttribute("aria-label"), /step 60 of 60/);
  await page.fill("#f-status", "").catch(() => {});
  await page.selectOption("#f-status", "queued");
  await page.waitForFunction(() => document.querySelectorAll("table.experiments tbody tr").length === 2);
  assert.match(page.url(), /status=queued/);
  await page.selectOption("#f-status", "running");
  await page.waitForFunction(() => document.querySelectorAll("table.experiments tbody tr").length === 1);
  // The running experiment's progress moves without reloading.
  const bar = page.locator(`tr[data-id="${seed.live}"] progress`);
  const before = Number(await bar.getAttribute("value"));
  await page.waitForFunction(([id, v]) => Number(document.querySelector(`tr[data-id="${id}"] progress`)?.getAttribute("value")) >= v + 3, [seed.live, before]);
  await page.selectOption("#f-status", "");
  await page.fill("#f-name", "GRPO base");
  await page.waitForFunction(() => document.querySelectorAll("table.experiments tbody tr").length === 1);
  assert.equal(await rows.first().locator("a").innerText(), "GRPO baseline");
});

await test("compare table shows the seeded numbers with the best marked", async () => {
  await page.goto(`${base}/compare?experiments=${first.id},${second.id}`);
  const table = page.locator(`table[aria-label="Results, as in the paper's main table"]`);
  await table.waitFor();
  const rows = await table.locator("tbody tr").all();
  assert.equal(rows.length, 2);
  for (const [i, row] of rows.entries()) {
    assert.equal(await row.locator("th a").innerText(), seed.finished[i].name);
    for (const [column, expected] of Object.entries(seed.expected[i])) {
      const cell = row.locator(`td[data-column="${column}"]`);
      const best = (await cell.getAttribute("class")) === "best";
      const text = (await cell.textContent()).replace(/\s*\(best\)/, "").trim();
      assert.equal(`${text}${best ? "*" : ""}`, expected, `${seed.finished[i].name}, ${column}`);
    }
  }
  await page.locator(".metrics .chart canvas").first().waitFor();
  assert.ok((await paintedPixels(".metrics .chart canvas")) > 500, "the overlaid curves are drawn");
  const legend = await page.locator(".metrics .chart").first().innerText();
  assert.match(legend, /Parallel-R1-Unseen \(S1\) · rl/);
  assert.match(legend, /GRPO baseline · rl/);
});

await test("a run logged by an MLflow client shows its params, tags, artifacts and curves", async () => {
  await page.goto(`${base}/experiments/${seed.mlflow}`);
  const params = page.locator('table[aria-label="Params"]');
  await params.waitFor();
  assert.match(await params.innerText(), /lr\s+1e-5/);
  assert.match(await page.locator('table[aria-label="Tags"]').innerText(), /method\s+parallel-r1/);
  assert.match(await page.locator(".facts").innerText(), /logged by\s+mlflow into “web sweep”/);
  assert.equal(await page.locator("h1 .badge").innerText(), "completed");
  const link = page.locator('ul[aria-label="Artifacts"] a');
  assert.equal(await link.innerText(), "notes.txt");
  const text = await page.evaluate(async (href) => (await fetch(href)).text(), await link.getAttribute("href"));
  assert.equal(text, "S1 reward\n");
  await page.locator(".metrics .chart canvas").first().waitFor();
  assert.ok((await paintedPixels(".metrics .chart canvas")) > 500, "the logged curves are drawn");
  assert.match(await page.locator(".metrics").innerText(), /loss/);
});

await test("a session of the real MLflow client shows its params, artifact and curves", async () => {
  await page.goto(`${base}/experiments/${seed.mlflow_client}`);
  const params = page.locator('table[aria-label="Params"]');
  await params.waitFor();
  assert.match(await params.innerText(), /rollout_n\s+8/);
  assert.match(await page.locator(".facts").innerText(), /logged by\s+mlflow into “browser sweep”/);
  assert.equal(await page.locator('ul[aria-label="Artifacts"] a').innerText(), "rollouts/samples.txt");
  await page.locator(".metrics .chart canvas").first().waitFor();
  assert.ok((await paintedPixels(".metrics .chart canvas")) > 500, "the logged curves are drawn");
  assert.match(await page.locator(".metrics").innerText(), /parallel_ratio/);
});

await test("a verl run recorded by prl follow shows its curves and strategy charts", async () => {
  await page.goto(`${base}/experiments/${seed.followed}`);
  await page.locator("#stages-title", { hasText: "Logged run" }).waitFor();
  assert.match(await page.locator(".facts").innerText(), /logged by\s+verl/);
  assert.equal(await page.locator("h1 .badge").innerText(), "completed");
  await page.locator(".metrics .chart canvas").first().waitFor();
  assert.match(await page.locator(".metrics").innerText(), /actor\/pg_loss/);
  await page.locator("section[aria-labelledby=strategy-title] canvas").first().waitFor();
  assert.ok((await paintedPixels("section[aria-labelledby=strategy-title] canvas")) > 500, "the strategy charts are drawn");
});

await test("runs compare by their trajectories", async () => {
  await page.goto(`${base}/compare?runs=${first.run},${second.run}`);
  const table = page.locator('table[aria-label="Runs compared by their trajectories"]');
  await table.waitFor();
  const rows = table.locator("tbody tr");
  assert.equal(await rows.count(), 2);
  for (const [i, run] of [first, second].entries()) {
    const row = rows.nth(i);
    assert.equal(await row.getAttribute("data-run"), run.run);
    assert.equal((await row.locator('td[data-column="Trajectories"]').textContent()).trim(), "12");
    // 3 of every 4 seeded trajectories are correct.
    assert.match(await row.locator('td[data-column="Accuracy (%)"]').textContent(), /^75\.0/);
  }
  assert.equal(await page.locator(`table[aria-label="Results, as in the paper's main table"]`).count(), 0, "no experiment table without experiments");
  await page.locator(".metrics .chart canvas").first().waitFor();
  assert.equal(await page.inputValue("#pick-runs"), `${first.run},${second.run}`);
});

await test("experiment page draws metric and strategy charts", async () => {
  await page.goto(`${base}/experiments/${first.id}`);
  await page.locator('[data-chart="position"] canvas').waitFor();
  await page.locator(".metrics .chart canvas").first().waitFor();
  assert.ok((await page.locator(".metrics .chart canvas").count()) >= 3, "three default metrics");
  assert.ok((await paintedPixels(".metrics .chart canvas")) > 500, "metric curves are drawn");
  assert.ok((await paintedPixels('[data-chart="position"] canvas')) > 200, "block positions are drawn");
  assert.ok((await paintedPixels('[data-chart="roles"] canvas')) > 200, "role shares are drawn");
  const evals = page.locator('table[aria-label="Evaluations"] tbody tr');
  assert.equal(await evals.count(), 3);
  assert.match(await page.locator('table[aria-label="Checkpoints"]').innerText(), /step-60/);
  // Smoothing and the time axis redraw the curves.
  await page.locator("#smoothing").fill("0.9");
  await page.selectOption("#axis", "time");
  await page.locator(".metrics .chart canvas").first().waitFor();
  assert.ok((await paintedPixels(".metrics .chart canvas")) > 500);
  // The chart settings are in the URL: a reload (or a shared link) shows the same charts.
  await page.uncheck("text=parallel_ratio");
  assert.match(page.url(), /metrics=accuracy,reward\/mean&smoothing=0\.90&axis=time$/);
  await page.reload();
  await page.locator(".metrics .chart canvas").first().waitFor();
  assert.equal(await page.inputValue("#smoothing"), "0.9");
  assert.equal(await page.inputValue("#axis"), "time");
  assert.deepEqual(await page.locator(".metrics .chart").evaluateAll((els) => els.map((e) => e.dataset.metric)), ["accuracy", "reward/mean"]);
});

await test("a long curve is drawn from server-side buckets that keep its spike", async () => {
  await page.goto(`${base}/experiments/${seed.long}`);
  const chart = page.locator('.metrics .chart[data-metric="loss"] .uplot');
  await chart.waitFor();
  const label = await chart.getAttribute("aria-label");
  const points = Number(/(\d+) points/.exec(label)[1]);
  assert.ok(points >= 100 && points <= 1000, `3000 steps folded into ${points} points`);
  assert.match(label, /max 50\.0000/, "the one spike of 50 survives the folding");
});

await test("trajectory browser offers the runs that logged trajectories", async () => {
  await page.goto(`${base}/trajectories`);
  const choices = page.locator(".run-chooser li");
  await choices.first().waitFor();
  assert.equal(await choices.count(), 3, "the two seeded RL runs and the followed verl run, not the SFT or the live one");
  await page.getByLabel(/GRPO baseline · rl/).check();
  await page.getByRole("button", { name: "Show their trajectories" }).click();
  await page.locator("article.trajectory").first().waitFor();
  assert.ok(page.url().endsWith(`/trajectories?runs=${second.run}`));
  assert.match(await page.locator('[role="status"]').last().textContent(), /12 trajectories on page 1/);
});

await test("trajectory view shows two paths side by side and marks bad format", async () => {
  await page.goto(`${base}/trajectories?runs=${first.run}&step_max=1`);
  await page.locator("article.trajectory").first().waitFor();
  assert.equal(await page.locator("article.trajectory").count(), 4);
  const block = page.locator("figure.block").first();
  const paths = await block.locator(".path").all();
  assert.equal(paths.length, 2);
  const [a, b] = [await paths[0].boundingBox(), await paths[1].boundingBox()];
  assert.ok(Math.abs(a.y - b.y) < 2, "the paths start on the same line");
  assert.ok(b.x >= a.x + a.width, "the second path is to the right of the first");
  assert.match(await paths[0].innerText(), /10\/2 = 5/);
  assert.match(await paths[1].innerText(), /10\*0.5 = 5/);
  assert.match(await block.locator(".summary").innerText(), /So 5\./);
  await page.locator("article.trajectory.invalid").scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(shots, "trajectories-unfiltered.png"), fullPage: true });
  const invalid = page.locator("article.trajectory.invalid");
  assert.equal(await invalid.count(), 1);
  assert.match(await invalid.locator("mark.issue").first().innerText(), /never closed/);
  // A filter narrows the page and is kept in the URL.
  await page.selectOption("#t-role", "verification");
  await page.click('form.filters button[type="submit"]');
  await page.waitForFunction(() => document.querySelectorAll("article.trajectory").length === 1);
  assert.match(page.url(), /role=verification/);
  assert.equal(await page.locator("figure.block").first().getAttribute("data-role"), "verification");
});

await test("a bad spec shows the error beside the field it names", async () => {
  await page.goto(`${base}/`);
  await page.click("#token-button");
  await page.fill("#token-input", process.env.PRL_TOKEN);
  await page.press("#token-input", "Enter");
  await page.waitForFunction((t) => localStorage.getItem("prl.token") === t, process.env.PRL_TOKEN);
  const spec = JSON.stringify(
    { name: "bad", model: "tiny", stages: [{ kind: "sft", name: "sft", dataset: "builtin:easy", learning_rate: -1, max_steps: 5 }] },
    null,
    2,
  );
  await page.fill("#spec", spec);
  await page.click('form.submit button[type="submit"]');
  const error = page.locator("#spec-error");
  await error.locator(".field-name").waitFor();
  assert.equal(await error.locator(".field-name").innerText(), "stages[0].learning_rate");
  assert.match(await error.innerText(), /line 9/);
  assert.equal(await page.locator("#spec").getAttribute("aria-invalid"), "true");
  // In TOML, the field is looked for inside the stage the error names, not the first one.
  await page.fill(
    "#spec",
    'name = "bad toml"\nmodel = "tiny"\n\n[[stages]]\nkind = "sft"\nname = "sft"\ndataset = "builtin:easy"\nlearning_rate = 1e-4\nmax_steps = 5\n\n' +
      '[[stages]]\nkind = "rl"\nname = "rl"\ndataset = "builtin:easy"\nreward = "s1"\nlearning_rate = -1\nsteps = 2\n',
  );
  await page.click('form.submit button[type="submit"]');
  await page.waitForFunction(() => document.querySelector("#spec-error .field-name")?.textContent === "stages[1].learning_rate");
  assert.match(await error.innerText(), /line 16/);
  await page.screenshot({ path: join(shots, "spec-error-in-second-toml-stage.png"), fullPage: true });
  // A good TOML spec is accepted and appears in the list without reloading.
  await page.fill("#spec", 'name = "from the form"\nmodel = "tiny"\n\n[[stages]]\nkind = "sft"\nname = "sft"\ndataset = "builtin:easy"\nlearning_rate = 1e-4\nmax_steps = 5\n');
  await page.click('form.submit button[type="submit"]');
  await page.locator("form.submit a").waitFor();
  await page.getByRole("link", { name: "from the form" }).waitFor();
});

await test("the workers page lists each daemon, and a job no daemon takes says why it waits", async () => {
  await page.goto(`${base}/workers`);
  const row = page.locator('tr[data-worker="gpu-node-1"]');
  await row.waitFor();
  const text = await row.innerText();
  for (const shown of ["active", "rack-7", "cuda:0", "141 GB", "gpu=h200", "eval", "idle"]) assert.ok(text.includes(shown), `${shown} in ${text}`);
  assert.match(await page.locator("main p[role=status]").innerText(), /1 active, 0 lost/);
  // The seeded daemon only evaluates: the queued SFT job waits, and the experiment says why.
  await page.goto(`${base}/experiments/${seed.watched}`);
  await page.locator(".waiting").waitFor();
  assert.equal(await page.locator(".waiting").innerText(), "waiting: no active daemon takes sft jobs (1 active)");
});

await test("cancel changes the status", async () => {
  await page.goto(`${base}/`);
  const row = page.locator(`tr[data-id="${seed.queued}"]`);
  await row.waitFor();
  assert.equal(await row.locator(".badge").innerText(), "queued");
  await row.getByRole("button", { name: "Cancel" }).click();
  await row.locator('.badge[data-status="cancelled"]').waitFor();
  assert.equal(await row.getByRole("button", { name: "Cancel" }).count(), 0);
});

await test("a running experiment's curves grow live", async () => {
  await page.goto(`${base}/experiments/${seed.live}`);
  const chart = page.locator('.metrics .chart[data-metric="reward/mean"] .uplot');
  await chart.waitFor();
  const points = async () => Number(/(\d+) points/.exec(await chart.getAttribute("aria-label"))[1]);
  const before = await points();
  await page.waitForFunction(
    (n) => Number(/(\d+) points/.exec(document.querySelector('.metrics .chart[data-metric="reward/mean"] .uplot')?.getAttribute("aria-label") ?? "")?.[1]) >= n + 3,
    before,
  );
  assert.equal(await page.locator("h1 .badge").innerText(), "running");
});

await test("a status change made elsewhere arrives live", async () => {
  await page.goto(`${base}/experiments/${seed.watched}`);
  await page.locator("h1 .badge").waitFor();
  assert.equal(await page.locator("h1 .badge").innerText(), "queued");
  await page.waitForFunction(() => document.getElementById("live").textContent.includes("live"));
  const response = await fetch(`${base}/api/v1/experiments/${seed.watched}/cancel`, {
    method: "POST",
    headers: { Authorization: `Bearer ${process.env.PRL_TOKEN}` },
  });
  assert.equal(response.status, 200);
  await page.locator('h1 .badge[data-status="cancelled"]').waitFor({ timeout: 10000 });
});

await test("an API error shows its message", async () => {
  await page.goto(`${base}/trajectories?runs=not-a-run`);
  const error = page.locator(".state.error");
  await error.waitFor();
  assert.match(await error.innerText(), /^runs: "not-a-run" is not an id/);
});

await test("pages are labelled, keyboard-usable and legible", async () => {
  for (const path of ["/", `/experiments/${first.id}`, `/compare?experiments=${first.id},${second.id}`, `/trajectories?runs=${first.run}`, "/workers"]) {
    await page.goto(`${base}${path}`);
    // Everything loaded (the live stream keeps the network busy, so no "network idle").
    await page.waitForFunction(() => document.querySelector("main h1") && !document.querySelector(".state.loading"));
    const report = await page.evaluate(() => {
      const unlabelled = [...document.querySelectorAll("input, select, textarea, button")].filter((el) => {
        if (el.closest("dialog:not([open])") || el.type === "hidden") return false;
        const named = el.getAttribute("aria-label") || el.labels?.length || (el.tagName === "BUTTON" && el.textContent.trim());
        return !named;
      });
      const luminance = (rgb) => {
        const [r, g, b] = rgb.map((v) => {
          v /= 255;
          return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
      };
      const parse = (c) => c.match(/[\d.]+/g).map(Number);
      const background = (el) => {
        for (let e = el; e; e = e.parentElement) {
          const c = parse(getComputedStyle(e).backgroundColor);
          if (c.length < 4 || c[3] > 0.5) return c.slice(0, 3);
        }
        return [255, 255, 255];
      };
      const lowContrast = [];
      for (const el of document.querySelectorAll("main *, header.site *")) {
        const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
        if (!own || !el.getClientRects().length) continue;
        const style = getComputedStyle(el);
        if (style.visibility === "hidden" || el.closest(".sr-only, .skip, .u-legend")) continue;
        const [l1, l2] = [luminance(parse(style.color).slice(0, 3)), luminance(background(el))].sort((a, b) => b - a);
        const ratio = (l1 + 0.05) / (l2 + 0.05);
        const large = parseFloat(style.fontSize) >= 24 || (parseFloat(style.fontSize) >= 18.6 && Number(style.fontWeight) >= 700);
        if (ratio < (large ? 3 : 4.5)) lowContrast.push(`${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
      }
      return { unlabelled: unlabelled.map((el) => el.outerHTML.slice(0, 80)), lowContrast };
    });
    assert.deepEqual(report.unlabelled, [], `${path}: controls without a label`);
    assert.deepEqual(report.lowContrast, [], `${path}: text below WCAG AA contrast`);
  }
  // Keyboard: the skip link comes first, then the navigation; Enter follows a link.
  await page.goto(`${base}/`);
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Compare");
  await page.keyboard.press("Enter");
  await page.waitForURL(/\/compare$/);
  await page.locator("#pick-filter").waitFor();
});

await test("where reads are protected, the UI asks for the token, then shows everything", async () => {
  const guarded = process.env.PRL_PROTECTED_URL;
  await page.goto(`${guarded}/`);
  const error = page.locator("p.state.error");
  await error.waitFor();
  assert.match(await error.innerText(), /reads need the API token/);
  await page.click("#token-button");
  await page.fill("#token-input", process.env.PRL_TOKEN);
  await page.press("#token-input", "Enter");
  await page.locator("table.experiments tbody tr").first().waitFor();
  assert.match(await page.locator("table.experiments tbody").innerText(), /behind the token/);
  await page.waitForFunction(() => document.getElementById("live").textContent === "● live");
  // An artifact downloads with the token too.
  await page.goto(`${guarded}/experiments/${process.env.PRL_PROTECTED_MLFLOW}`);
  const link = page.locator('ul[aria-label="Artifacts"] a');
  await link.waitFor();
  const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
  const saved = await download.path();
  assert.equal(readFileSync(saved, "utf8"), "S1 reward\n");
});

await test("everything the UI loaded came from prl", async () => {
  assert.deepEqual([...foreign], []);
});

await browser.close();
const failed = results.filter((r) => !r.ok);
if (problems.length) console.log(`browser reported:\n  ${problems.join("\n  ")}`);
console.log(`${results.length - failed.length} passed, ${failed.length} failed; screenshots in ${shots}`);
process.exit(failed.length || problems.length ? 1 : 0);
