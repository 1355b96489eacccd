// Client-side filter of every photo by its predicted (top-1) label; no server needed.
// The photos are split into shards by the first two letters of each word of their label
// (search/<key>.js): typing loads only the shard the query's first two letters name, so the
// index pages and the filter stay light however many photos there are. A label matches where
// one of its words starts with the query.
// Also: the pager's "jump to page" box.
(function () {
  "use strict";
  var forms = document.querySelectorAll("form[data-jump]");
  for (var f = 0; f < forms.length; f++) {
    forms[f].hidden = false;
    forms[f].addEventListener("submit", function (event) {
      event.preventDefault();
      var pages = parseInt(this.getAttribute("data-pages"), 10);
      var n = Math.min(Math.max(parseInt(this.elements.page.value, 10) || 1, 1), pages);
      window.location.href = n === 1 ? "index.html" : "index-" + n + ".html";
    });
  }

  var input = document.getElementById("filter");
  if (!input) { return; }
  var root = input.getAttribute("data-root") || "";
  var results = document.getElementById("filter-results");
  var status = document.getElementById("filter-status");
  var paged = document.querySelectorAll("[data-paged]");
  var LIMIT = 120;  // as reportgen.site.pages.FILTER_SHOWN: each shard keeps this many a label
  var shards = {};  // key -> photos, once loaded; key -> null while loading
  var keys = null;  // the shards there are (search/keys.js), once loaded
  var keysRequested = false;

  function load(path) {
    var script = document.createElement("script");
    script.src = root + path;
    document.head.appendChild(script);
  }

  window.reportgenShardKeys = function (list) {
    keys = {};
    list.forEach(function (key) { keys[key] = true; });
    apply();
  };

  // A shard holds labels: [label, how many photos, the first LIMIT of them], each photo as
  // [position in the folder, source, page, thumbnail, percent].
  window.reportgenShard = function (key, labels) {
    shards[key] = labels.map(function (l) {
      return {label: l[0], count: l[1], photos: l[2].map(function (p) {
        return {position: p[0], source: p[1], page: p[2], thumb: p[3], label: l[0], percent: p[4]};
      })};
    });
    apply();
  };

  // As reportgen.site.pages.shard_key: the first characters, as hex code points.
  function shardKey(text, letters) {
    var chars = Array.from(text.toLowerCase()).slice(0, letters);
    return chars.map(function (c) { return c.codePointAt(0).toString(16); }).join("-");
  }

  // The shard that holds every label with a word starting with the query: two letters' worth,
  // or more where a large shard was split. "" when the query must be longer to tell; null when
  // no label has a word starting so.
  function shardFor(query) {
    var length = Array.from(query).length;
    for (var letters = 2; letters <= 4; letters++) {
      var key = shardKey(query, letters);
      if (keys[key]) { return key; }
      var split = Object.keys(keys).some(function (k) { return k.indexOf(key + "-") === 0; });
      if (!split) { return null; }
      if (length <= letters) { return ""; }
    }
    return null;
  }

  function startsAWord(label, query) {
    var lower = label.toLowerCase();
    var at = lower.indexOf(query);
    while (at !== -1) {
      if (at === 0 || !/[\p{L}\p{N}]/u.test(lower.charAt(at - 1))) { return true; }
      at = lower.indexOf(query, at + 1);
    }
    return false;
  }

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
    if (Array.from(query).length < 2) {
      for (i = 0; i < paged.length; i++) { show(paged[i], true); }
      show(results, false);
      status.textContent = "Type at least two letters.";
      return;
    }
    if (keys === null) {
      if (!keysRequested) { keysRequested = true; load("search/keys.js"); }
      status.textContent = "Loading…";
      return;
    }
    var key = shardFor(query);
    if (key === "") {
      for (i = 0; i < paged.length; i++) { show(paged[i], true); }
      show(results, false);
      status.textContent = "Many labels start so: type another letter.";
      return;
    }
    if (key === null) {
      key = "none";
      shards[key] = [];  // no label has a word starting with these letters
    } else if (!(key in shards)) {
      shards[key] = null;
      load("search/" + key + ".js");
    }
    var labels = shards[key];
    if (!labels) {
      status.textContent = "Loading…";
      return;
    }
    var total = 0;
    var matches = [];
    labels.forEach(function (l) {
      if (startsAWord(l.label, query)) {
        total += l.count;
        matches = matches.concat(l.photos);
      }
    });
    matches.sort(function (a, b) { return a.position - b.position; });  // folder order
    results.textContent = "";
    matches.slice(0, LIMIT).forEach(function (p) { results.appendChild(item(p)); });
    for (i = 0; i < paged.length; i++) { show(paged[i], false); }
    show(results, true);
    var count = total === 1 ? "1 photo" : total + " photos";
    status.textContent = count + " predicted as “" + input.value.trim() + "”" +
      (total > LIMIT ? "; showing the first " + LIMIT + "." : ".");
  }

  input.addEventListener("input", apply);
  apply();
})();
