// Sorting and filtering for the models table: an enhancement, the page works without it.
(function () {
  "use strict";
  const table = document.getElementById("models");
  const form = document.getElementById("filters");
  if (!table || !form) return;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const texts = rows.map((row) => row.textContent.toLowerCase());
  const text = document.getElementById("filter-text");
  const verdict = document.getElementById("filter-verdict");
  const count = document.getElementById("filter-count");
  form.hidden = false;
  form.addEventListener("submit", (event) => event.preventDefault());

  const verdicts = rows.map((row) => row.dataset.verdict);

  // Change the rows while the body is out of the document: one layout afterwards, not one per row.
  function detached(change) {
    const parent = body.parentNode;
    const next = body.nextSibling;
    parent.removeChild(body);
    change();
    parent.insertBefore(body, next);
  }

  function filter() {
    const needle = text.value.trim().toLowerCase();
    const wanted = verdict.value;
    let shown = 0;
    detached(() => rows.forEach((row, i) => {
      const visible = (!needle || texts[i].includes(needle)) && (!wanted || verdicts[i] === wanted);
      if (row.hidden === visible) row.hidden = !visible; // touch only the rows that change
      if (visible) shown++;
    }));
    count.value = shown + (shown === 1 ? " model" : " models");
  }
  let pending = 0;
  text.addEventListener("input", () => { clearTimeout(pending); pending = setTimeout(filter, 80); });
  verdict.addEventListener("change", filter);

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

  function key(row, column, numeric) {
    const cell = row.cells[column];
    return numeric ? parseFloat(cell.dataset.value || "0") : cell.textContent.trim().toLowerCase();
  }
  function sort(column, th) {
    const numeric = th.dataset.type === "number";
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    headers.forEach((h) => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const keyed = rows.map((row, i) => [key(row, column, numeric), i]);
    keyed.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] - b[1]) * (ascending ? 1 : -1));
    detached(() => keyed.forEach(([, i]) => body.appendChild(rows[i])));
  }
})();
