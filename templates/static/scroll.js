// Pictures wider than the screen scroll sideways inside their frame; this says so above each one
// that does (and only those), and keeps saying it right as the window is resized.
(function () {
  "use strict";
  var frames = document.querySelectorAll("[data-scroll]");

  function update() {
    for (var i = 0; i < frames.length; i++) {
      var frame = frames[i];
      var wide = frame.scrollWidth > frame.clientWidth + 1;
      var hint = frame.previousElementSibling;
      var has = hint && hint.classList.contains("scroll-hint");
      if (wide && !has) {
        hint = document.createElement("p");
        hint.className = "scroll-hint";
        hint.textContent = "Wider than the screen: scroll sideways to see all of it \u2192";
        frame.parentNode.insertBefore(hint, frame);
      } else if (!wide && has) {
        hint.remove();
      }
      frame.classList.toggle("overflowing", wide);
    }
  }

  update();
  window.addEventListener("load", update);
  window.addEventListener("resize", update);
})();
