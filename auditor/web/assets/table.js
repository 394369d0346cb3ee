// Sorting and filtering for the models table: an enhancement, the page works without it.
// With thousands of rows, what costs is the browser laying out every row (seconds), not the matching
// (milliseconds). So the script keeps the rows in memory and puts only the first PAGE matches in the
// table, with a button for the rest: filtering and sorting stay instant at 10,000 rows.
(function () {
  "use strict";
  const PAGE = 250;
  const table = document.getElementById("models");
  const form = document.getElementById("filters");
  if (!table || !form) return;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const texts = rows.map((row) => row.textContent.toLowerCase());
  const verdicts = rows.map((row) => row.dataset.verdict);
  const text = document.getElementById("filter-text");
  const verdict = document.getElementById("filter-verdict");
  const count = document.getElementById("filter-count");
  const more = document.createElement("button");
  more.type = "button";
  more.className = "more";
  table.after(more);

  let order = rows.map((_, i) => i); // the sort order, as indexes into rows
  let limit = PAGE;

  function render() {
    const needle = text.value.trim().toLowerCase();
    const wanted = verdict.value;
    const matches = order.filter((i) => (!needle || texts[i].includes(needle)) && (!wanted || verdicts[i] === wanted));
    const fragment = document.createDocumentFragment();
    matches.slice(0, limit).forEach((i) => fragment.appendChild(rows[i]));
    body.replaceChildren(fragment);
    const n = matches.length.toLocaleString("en-US");
    count.value = n + (matches.length === 1 ? " model" : " models");
    more.hidden = matches.length <= limit;
    more.textContent = "Show all " + n + " models";
  }
  function filter() {
    limit = PAGE;
    render();
  }
  let pending = 0;
  text.addEventListener("input", () => { clearTimeout(pending); pending = setTimeout(filter, 80); });
  verdict.addEventListener("change", filter);
  form.addEventListener("submit", (event) => event.preventDefault());
  more.addEventListener("click", () => { limit = Infinity; render(); });

  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach((th, column) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sort";
    button.textContent = th.textContent;
    th.textContent = "";
    th.appendChild(button);
    button.addEventListener("click", () => sort(column, th));
  });

  // Text compares as people read it: "L2 [...]" before "L10 [...]", "model-9" before "model-10".
  const collator = new Intl.Collator("en", { numeric: true, sensitivity: "base" });
  function sort(column, th) {
    const numeric = th.dataset.type === "number";
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    headers.forEach((h) => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const cells = rows.map((row) => row.cells[column]);
    const keys = numeric ? cells.map((c) => parseFloat(c.dataset.value || "0")) : cells.map((c) => c.textContent.trim());
    const compare = numeric ? (a, b) => (keys[a] < keys[b] ? -1 : keys[a] > keys[b] ? 1 : 0) : (a, b) => collator.compare(keys[a], keys[b]);
    // Ties keep the page's order (newest first) whichever the direction.
    order = rows.map((_, i) => i);
    order.sort((a, b) => compare(a, b) * (ascending ? 1 : -1) || a - b);
    render();
  }

  form.hidden = false;
  render();
})();
