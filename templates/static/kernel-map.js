// Each conv1 map in a photo's grid links to its kernel on the kernels page. The image map's 64
// areas are made here, from the grid's geometry in the <map>'s data-grid, rather than written
// into every photo page (8 KB a page); without scripts the grid still links to the kernels page.
(function () {
  "use strict";
  var maps = document.querySelectorAll("map[data-grid]");
  for (var m = 0; m < maps.length; m++) {
    var map = maps[m];
    var g = map.getAttribute("data-grid").split(",").map(Number);
    var columns = g[0], count = g[1], stepX = g[2], stepY = g[3], gap = g[4];
    var href = map.getAttribute("data-href");
    for (var k = 0; k < count; k++) {
      var x = (k % columns) * stepX, y = Math.floor(k / columns) * stepY;
      var area = document.createElement("area");
      area.shape = "rect";
      area.coords = [x, y, x + stepX - gap, y + stepY - gap].join(",");
      area.href = href + k;
      area.alt = "Map " + k + ": see kernel " + k + " across the folder";
      map.appendChild(area);
    }
  }
})();
