// Client-side filter of every photo by its predicted (top-1) label; no server needed.
// The full list (search-index.js, one entry per photo) is loaded only once someone types,
// so index pages stay light however many photos there are.
(function () {
  "use strict";
  var input = document.getElementById("filter");
  if (!input) { return; }
  var root = input.getAttribute("data-root") || "";
  var results = document.getElementById("filter-results");
  var status = document.getElementById("filter-status");
  var paged = document.querySelectorAll("[data-paged]");
  var LIMIT = 120;
  var requested = false;

  function show(node, visible) { node.hidden = !visible; }

  function item(photo) {
    var li = document.createElement("li");
    var a = document.createElement("a");
    a.href = root + photo.page;
    var img = document.createElement("img");
    img.src = root + photo.thumb;
    img.alt = photo.source;
    img.width = 160;
    img.height = 160;
    img.loading = "lazy";
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = photo.source;
    var top1 = document.createElement("span");
    top1.className = "top1";
    top1.textContent = photo.label + " ";
    var prob = document.createElement("span");
    prob.className = "prob";
    prob.textContent = photo.percent;
    top1.appendChild(prob);
    a.appendChild(img);
    a.appendChild(name);
    a.appendChild(top1);
    li.appendChild(a);
    return li;
  }

  function apply() {
    var query = input.value.trim().toLowerCase();
    var i;
    if (!query) {
      for (i = 0; i < paged.length; i++) { show(paged[i], true); }
      show(results, false);
      status.textContent = "";
      return;
    }
    var photos = window.reportgenPhotos;
    if (!photos) {
      if (!requested) {
        requested = true;
        var script = document.createElement("script");
        script.src = root + "search-index.js";
        script.onload = apply;
        document.head.appendChild(script);
      }
      status.textContent = "Loading…";
      return;
    }
    var matches = photos.filter(function (p) { return p.label.toLowerCase().indexOf(query) !== -1; });
    results.textContent = "";
    matches.slice(0, LIMIT).forEach(function (p) { results.appendChild(item(p)); });
    for (i = 0; i < paged.length; i++) { show(paged[i], false); }
    show(results, true);
    var count = matches.length === 1 ? "1 photo" : matches.length + " photos";
    status.textContent = count + " predicted as “" + input.value.trim() + "”" +
      (matches.length > LIMIT ? "; showing the first " + LIMIT + "." : ".");
  }

  input.addEventListener("input", apply);
  apply();
})();
