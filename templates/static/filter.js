// Client-side filter of the index by predicted label: no server needed.
(function () {
  "use strict";
  var input = document.getElementById("filter");
  if (!input) { return; }
  var gallery = document.getElementById(input.getAttribute("data-filter-target"));
  var empty = document.getElementById("filter-empty");
  var items = gallery ? gallery.children : [];
  function apply() {
    var query = input.value.trim().toLowerCase();
    var shown = 0;
    for (var i = 0; i < items.length; i++) {
      var label = items[i].getAttribute("data-label") || "";
      var match = !query || label.indexOf(query) !== -1;
      items[i].hidden = !match;
      if (match) { shown++; }
    }
    if (empty) { empty.hidden = shown !== 0; }
  }
  input.addEventListener("input", apply);
  apply();
})();
