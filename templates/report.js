(function () {
  "use strict";
  // Every value from AWS goes into the page through textContent, never as
  // HTML. Only the visible page of rows is in the DOM.
  var raw = JSON.parse(document.getElementById("report-data").textContent);
  var all = raw.rows.map(function (row) {
    var o = {};
    for (var i = 0; i < raw.fields.length; i++) o[raw.fields[i]] = row[i];
    return o;
  });
  var VERDICT = { ready: "\u2714 READY", not_ready: "\u2716 NOT READY", not_validated: "\u2013 not validated" };
  function verdictOf(r) { return VERDICT[r.status] || r.status; }
  function str(v) { return v === null || v === undefined ? "" : String(v); }
  var columns = [
    { key: "landing_zone", label: "Landing zone", get: function (r) { return r.landing_zone; } },
    { key: "account_id", label: "Account", get: function (r) { return r.account_id; }, plain: true },
    { key: "region", label: "Region", get: function (r) { return r.region; } },
    { key: "instance_id", label: "Instance", get: function (r) { return r.instance_id; }, plain: true },
    { key: "name", label: "Name", get: function (r) { return str(r.name); }, wrap: true },
    { key: "state", label: "State", get: function (r) { return r.state; }, cls: function (r) { return "state-" + r.state; } },
    { key: "platform", label: "Platform", get: function (r) { return r.platform; } },
    { key: "instance_type", label: "Type", get: function (r) { return r.instance_type; } },
    { key: "ssm", label: "SSM", get: function (r) { return r.ssm.ping_status; } },
    { key: "ami", label: "AMI", get: function (r) { return r.backup ? str(r.backup.ami_id) : ""; }, plain: true },
    { key: "backup", label: "Backup", get: function (r) { return r.backup ? str(r.backup.state || (r.backup.error ? "error" : "")) : ""; } },
    { key: "started", label: "Started", get: function (r) { return r.start ? (r.start.started_by_run ? "started" : (r.start.error ? "failed" : "")) : ""; } },
    { key: "verdict", label: "Verdict", get: verdictOf, badge: true },
    { key: "reasons", label: "Reasons", get: function (r) { return r.validation ? r.validation.reasons.join("; ") : ""; }, wrap: true }
  ];
  all.forEach(function (r) {
    var parts = columns.map(function (c) { return c.get(r); });
    Object.keys(r.tags).forEach(function (k) { parts.push(k, r.tags[k]); });
    if (r.backup) parts.push(str(r.backup.error), r.backup.snapshot_ids.join(" "));
    if (r.start) parts.push(str(r.start.error));
    r._search = parts.join("\n").toLowerCase();
  });

  var $ = function (id) { return document.getElementById(id); };
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  var state = { sortKey: "", sortDir: 1, page: 0, size: 100, shown: all };
  var filters = [
    { id: "f-landing_zone", get: function (r) { return r.landing_zone; } },
    { id: "f-region", get: function (r) { return r.region; } },
    { id: "f-state", get: function (r) { return r.state; } },
    { id: "f-verdict", get: verdictOf }
  ];
  filters.forEach(function (f) {
    var seen = {};
    all.forEach(function (r) { seen[f.get(r)] = true; });
    Object.keys(seen).sort().forEach(function (v) {
      var o = el("option", v);
      o.value = v;
      $(f.id).appendChild(o);
    });
    $(f.id).addEventListener("change", function () { state.page = 0; apply(); });
  });

  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  var head = $("head");
  columns.forEach(function (c) {
    var th = el("th");
    th.setAttribute("scope", "col");
    th.dataset.key = c.key;
    var b = el("button", c.label);
    b.type = "button";
    b.title = "Sort by " + c.label;
    b.addEventListener("click", function () {
      state.sortDir = state.sortKey === c.key ? -state.sortDir : 1;
      state.sortKey = c.key;
      state.page = 0;
      apply();
    });
    th.appendChild(b);
    head.appendChild(th);
  });

  function apply() {
    var q = $("filter").value.trim().toLowerCase();
    var chosen = filters.map(function (f) { return $(f.id).value; });
    var rows = all.filter(function (r) {
      if (q && r._search.indexOf(q) < 0) return false;
      for (var i = 0; i < filters.length; i++) {
        if (chosen[i] && filters[i].get(r) !== chosen[i]) return false;
      }
      return true;
    });
    if (state.sortKey) {
      var col = columns.filter(function (c) { return c.key === state.sortKey; })[0];
      var keyed = rows.map(function (r, i) { return [col.get(r), i, r]; });
      // Ids sort as text (hex digits are not numbers); the rest naturally.
      var cmp = col.plain ? function (x, y) { return x < y ? -1 : x > y ? 1 : 0; } : collator.compare;
      keyed.sort(function (a, b) { return state.sortDir * cmp(a[0], b[0]) || a[1] - b[1]; });
      rows = keyed.map(function (k) { return k[2]; });
    }
    Array.prototype.forEach.call(head.children, function (th) {
      if (th.dataset.key === state.sortKey) th.setAttribute("aria-sort", state.sortDir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
    state.shown = rows;
    render();
  }

  function render() {
    var rows = state.shown;
    var pages = Math.max(1, Math.ceil(rows.length / state.size));
    state.page = Math.min(state.page, pages - 1);
    var from = state.page * state.size;
    var page = rows.slice(from, from + state.size);
    var body = $("rows");
    var frag = document.createDocumentFragment();
    page.forEach(function (r) {
      var tr = el("tr");
      tr.tabIndex = 0;
      tr.dataset.id = r.instance_id;
      columns.forEach(function (c) {
        var td = el("td", undefined, c.wrap ? "wrap" : c.plain ? "id" : (c.cls ? c.cls(r) : ""));
        var v = c.get(r);
        if (c.badge) td.appendChild(el("span", v, "st st-" + r.status));
        else td.textContent = v;
        tr.appendChild(td);
      });
      tr.addEventListener("click", function () { details(r, tr); });
      tr.addEventListener("keydown", function (e) { if (e.key === "Enter") details(r, tr); });
      frag.appendChild(tr);
    });
    body.replaceChildren(frag);
    $("row-count").textContent = String(rows.length);
    $("page-info").textContent = rows.length
      ? "Rows " + (from + 1) + "\u2013" + (from + page.length) + " of " + rows.length + " \u00b7 page " + (state.page + 1) + " of " + pages
      : "No instance matches.";
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
  }

  function table(rows) {
    var t = el("table");
    var b = el("tbody");
    rows.forEach(function (kv) {
      var tr = el("tr");
      tr.appendChild(el("th", kv[0]));
      tr.appendChild(el("td", str(kv[1])));
      b.appendChild(tr);
    });
    t.appendChild(b);
    return t;
  }

  function details(r, tr) {
    Array.prototype.forEach.call(document.querySelectorAll("#rows tr.sel"), function (x) { x.classList.remove("sel"); });
    tr.classList.add("sel");
    var d = $("details");
    d.replaceChildren();
    var close = el("button", "Close");
    close.type = "button";
    close.addEventListener("click", function () { d.hidden = true; });
    d.appendChild(close);
    d.appendChild(el("h3", r.instance_id + (r.name !== null ? " \u00b7 " + r.name : "")));
    var v = r.validation;
    d.appendChild(el("span", verdictOf(r), "st st-" + r.status));
    d.appendChild(el("h4", "Instance"));
    d.appendChild(table([
      ["landing zone", r.landing_zone], ["account", r.account_id], ["region", r.region],
      ["environment", r.environment], ["state", r.state], ["state at scan", r.initial_state],
      ["platform", r.platform], ["type", r.instance_type], ["private IP", r.private_ip],
      ["launched", r.launch_time], ["SSM agent", r.ssm.ping_status + (r.ssm.agent_version ? " " + r.ssm.agent_version : "")]
    ]));
    d.appendChild(el("h4", "Verdict and reasons"));
    if (v) {
      var ul = el("ul");
      if (!v.reasons.length) ul.appendChild(el("li", "no reason: ready"));
      v.reasons.forEach(function (x) { ul.appendChild(el("li", x)); });
      d.appendChild(ul);
    } else d.appendChild(el("p", "Validation did not run."));
    d.appendChild(el("h4", "Backup"));
    var b = r.backup;
    d.appendChild(b ? table([
      ["AMI", b.ami_id], ["state", b.state], ["reused from an earlier attempt", b.reused ? "yes" : "no"],
      ["created", b.created_at], ["completed", b.completed_at],
      ["duration (s)", b.duration_s], ["expires", b.expires_at],
      ["snapshots", b.snapshot_ids.join(", ")], ["error", b.error]
    ]) : el("p", "No backup in this run."));
    d.appendChild(el("h4", "Start"));
    var s = r.start;
    d.appendChild(s ? table([
      ["state before", s.initial_state], ["state after", s.final_state],
      ["started by this run", s.started_by_run ? "yes" : "no"],
      ["started", s.started_at], ["running", s.running_at], ["error", s.error]
    ]) : el("p", "Not acted on by the start phase."));
    var keys = Object.keys(r.tags);
    d.appendChild(el("h4", "Tags (" + keys.length + ")"));
    d.appendChild(table(keys.map(function (k) { return [k, r.tags[k]]; })));
    d.hidden = false;
    d.scrollIntoView({ block: "nearest" });
  }

  $("filter").addEventListener("input", function () { state.page = 0; apply(); });
  $("page-size").addEventListener("change", function () { state.size = parseInt(this.value, 10) || 100; state.page = 0; render(); });
  $("prev").addEventListener("click", function () { state.page--; render(); });
  $("next").addEventListener("click", function () { state.page++; render(); });
  state.size = parseInt($("page-size").value, 10) || 100;
  apply();
  document.body.dataset.ready = "true";
})();
