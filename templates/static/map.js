// The folder's map (map.html): every photo as a dot at its place, coloured by class; where few
// enough are in view (zoomed in, or a small folder), the photos themselves, loaded only then. Drag or use the arrow keys
// to move, the wheel, the buttons or +/- to zoom; a click (or Enter, for the photo nearest the
// centre) opens a photo's page. map-data.js hands the data to reportgenMap().
(function () {
  "use strict";
  var PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                 "#b07aa1", "#ff9da7", "#9c755f", "#2f4b7c", "#d45087", "#8a8f98"];
  var MOST_THUMBS = 300;    // photos replace dots when at most this many are in view
  var CACHED = 600;         // pictures kept loaded

  window.reportgenMap = function (data) {
    var canvas = document.getElementById("map");
    var status = document.getElementById("map-status");
    if (!canvas || !canvas.getContext) return;
    var ctx = canvas.getContext("2d");
    var points = data.points, span = data.scale;
    var legend = document.querySelectorAll("#map-legend [data-colour]");
    for (var l = 0; l < legend.length; l++) {
      legend[l].querySelector(".swatch").style.background = colour(+legend[l].getAttribute("data-colour"));
    }
    var view = {zoom: 1, x: span / 2, y: span / 2};  // zoom against the fitted map; centre in map units
    var pictures = new Map(), pending = false, width = 0, height = 0, ratio = 1;

    function colour(i) { return PALETTE[Math.min(i, PALETTE.length - 1)]; }
    function fit() { return Math.min(width, height) / span * 0.95; }
    function toScreen(p) {
      var s = fit() * view.zoom;
      return [(p[0] - view.x) * s + width / 2, (p[1] - view.y) * s + height / 2];
    }
    function toMap(x, y) {
      var s = fit() * view.zoom;
      return [(x - width / 2) / s + view.x, (y - height / 2) / s + view.y];
    }
    function resize() {
      ratio = window.devicePixelRatio || 1;
      width = canvas.clientWidth; height = canvas.clientHeight;
      canvas.width = Math.round(width * ratio); canvas.height = Math.round(height * ratio);
      draw();
    }
    function inView() {
      var out = [];
      for (var i = 0; i < points.length; i++) {
        var q = toScreen(points[i]);
        if (q[0] > -50 && q[0] < width + 50 && q[1] > -50 && q[1] < height + 50) out.push(i);
      }
      return out;
    }
    function picture(p) {
      var key = p[4], img = pictures.get(key);
      if (!img) {
        if (pictures.size >= CACHED) pictures.delete(pictures.keys().next().value);
        img = new Image();
        img.onload = redraw;
        img.src = data.pictures + key + data.picture;
        pictures.set(key, img);
      }
      return img;
    }
    function redraw() {
      if (pending) return;
      pending = true;
      window.requestAnimationFrame(function () { pending = false; draw(); });
    }
    function draw() {
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, width, height);
      var shown = inView();
      // Photos instead of dots once few enough are in view (at once, for a small folder); each
      // as large as the room they share allows.
      var thumbs = shown.length <= MOST_THUMBS;
      var room = Math.sqrt(width * height / Math.max(1, shown.length));
      var size = thumbs ? Math.max(24, Math.min(96, 0.6 * room)) : Math.max(3, Math.min(10, 0.15 * room));
      for (var n = 0; n < shown.length; n++) {
        var p = points[shown[n]], q = toScreen(p);
        ctx.fillStyle = colour(p[2]);
        if (thumbs) {
          var img = picture(p);
          ctx.fillRect(q[0] - size / 2 - 2, q[1] - size / 2 - 2, size + 4, size + 4);
          if (img.complete && img.naturalWidth) ctx.drawImage(img, q[0] - size / 2, q[1] - size / 2, size, size);
        } else {
          ctx.fillRect(q[0] - size / 2, q[1] - size / 2, size, size);
        }
      }
      status.textContent = shown.length + " of " + points.length + " photos in view" +
        (thumbs ? "" : "; zoom in to see them");
    }
    function nearest(x, y, within) {
      var best = -1, bestD = within * within;
      for (var i = 0; i < points.length; i++) {
        var q = toScreen(points[i]), dx = q[0] - x, dy = q[1] - y, d = dx * dx + dy * dy;
        if (d <= bestD) { best = i; bestD = d; }
      }
      return best;
    }
    function open(i) { if (i >= 0) window.location.href = data.pages + points[i][3] + ".html"; }
    function zoomBy(factor, x, y) {
      var before = toMap(x, y);
      view.zoom = Math.max(1, Math.min(200, view.zoom * factor));
      var after = toMap(x, y);
      view.x += before[0] - after[0]; view.y += before[1] - after[1];
      draw();
    }
    function pan(dx, dy) { var s = fit() * view.zoom; view.x -= dx / s; view.y -= dy / s; draw(); }

    var drag = null;
    canvas.addEventListener("pointerdown", function (e) {
      drag = {x: e.clientX, y: e.clientY, moved: 0};
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener("pointermove", function (e) {
      if (!drag) return;
      var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      drag.moved += Math.abs(dx) + Math.abs(dy); drag.x = e.clientX; drag.y = e.clientY;
      pan(dx, dy);
    });
    canvas.addEventListener("pointerup", function (e) {
      var clicked = drag && drag.moved < 5;
      drag = null;
      if (clicked) {
        var r = canvas.getBoundingClientRect();
        open(nearest(e.clientX - r.left, e.clientY - r.top, 16));
      }
    });
    canvas.addEventListener("wheel", function (e) {
      e.preventDefault();
      var r = canvas.getBoundingClientRect();
      zoomBy(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - r.left, e.clientY - r.top);
    }, {passive: false});
    canvas.addEventListener("keydown", function (e) {
      var step = 60, handled = true;
      if (e.key === "ArrowLeft") pan(step, 0);
      else if (e.key === "ArrowRight") pan(-step, 0);
      else if (e.key === "ArrowUp") pan(0, step);
      else if (e.key === "ArrowDown") pan(0, -step);
      else if (e.key === "+" || e.key === "=") zoomBy(1.5, width / 2, height / 2);
      else if (e.key === "-") zoomBy(0.667, width / 2, height / 2);
      else if (e.key === "0") { view = {zoom: 1, x: span / 2, y: span / 2}; draw(); }
      else if (e.key === "Enter") open(nearest(width / 2, height / 2, Math.max(width, height)));
      else handled = false;
      if (handled) e.preventDefault();
    });
    var buttons = document.querySelectorAll("[data-zoom]");
    for (var b = 0; b < buttons.length; b++) {
      buttons[b].addEventListener("click", function () {
        zoomBy(+this.getAttribute("data-zoom"), width / 2, height / 2);
      });
    }
    document.querySelector("[data-reset]").addEventListener("click", function () {
      view = {zoom: 1, x: span / 2, y: span / 2}; draw();
    });
    window.addEventListener("resize", resize);
    resize();
  };
})();
