// faceindex web page: the face-box picker shared by the search and verify pages. The faces found in a photo
// (POST /v1/detect) are drawn over it as toggle buttons (click, or Tab and Enter/Space), in one mode or two:
// pick one face (verify) or several (search).
import { $$, h } from "./core.js";

export const area = (b) => (b[2] - b[0]) * (b[3] - b[1]);

/** The largest of `faces` (the usual subject of a photo). */
export function largest(faces) {
  return faces.reduce((a, b) => (area(b.box) > area(a.box) ? b : a));
}

/**
 * A picker over `img` whose boxes go into `layer` (an element positioned over the image).
 * `multiple`: several faces may be selected (toggle), else one (select). `onChange(selectedIndexes, announcedIndex)`
 * is called after every change; `label(face, n, total)` names each box for screen readers.
 */
export function facePicker({ img, layer, multiple = false, onChange = () => {}, name = "Face" }) {
  const picker = {
    faces: [],
    selected: new Set(),
    /** The faces' positions in the list (1-based, as drawn on the boxes), by detector index. */
    number(index) {
      return picker.faces.findIndex((f) => f.index === index) + 1;
    },
    /** Selected detector indexes, in the order of the boxes' numbers. */
    list() {
      return picker.faces.filter((f) => picker.selected.has(f.index)).map((f) => f.index);
    },
    face(index) {
      return picker.faces.find((f) => f.index === index);
    },
    show(faces) {
      picker.faces = faces;
      picker.selected = new Set();
      draw();
    },
    clear() {
      picker.faces = [];
      picker.selected = new Set();
      layer.replaceChildren();
    },
    select(index, announce = false) {
      if (multiple && picker.selected.has(index)) picker.selected.delete(index);
      else if (multiple) picker.selected.add(index);
      else picker.selected = new Set([index]);
      for (const b of $$(".face-box", layer)) {
        b.setAttribute("aria-pressed", String(picker.selected.has(Number(b.dataset.index))));
      }
      onChange(picker.list(), announce ? index : null);
    },
  };

  function draw() {
    const paint = () => {
      const W = img.naturalWidth;
      const H = img.naturalHeight;
      layer.replaceChildren();
      if (!W || !H) return;
      picker.faces.forEach((f, i) => {
        const [x1, y1, x2, y2] = f.box;
        // percentages of the natural size: the boxes follow the image at any displayed size
        layer.append(h("button", {
          type: "button",
          class: "face-box",
          "aria-pressed": String(picker.selected.has(f.index)),
          "aria-label": `${name} ${i + 1} of ${picker.faces.length}`,
          title: `${name} ${i + 1}`,
          dataset: { index: f.index },
          style: {
            left: `${(100 * Math.max(0, x1)) / W}%`,
            top: `${(100 * Math.max(0, y1)) / H}%`,
            width: `${(100 * (Math.min(W, x2) - Math.max(0, x1))) / W}%`,
            height: `${(100 * (Math.min(H, y2) - Math.max(0, y1))) / H}%`,
          },
          onclick: () => picker.select(f.index, true),
        }, h("span", { class: "face-num", "aria-hidden": "true" }, String(i + 1))));
      });
    };
    if (img.complete && img.naturalWidth) paint();
    else img.addEventListener("load", paint, { once: true });
  }

  return picker;
}

/** A square crop of `box` (with a margin) from a loaded <img>, drawn on a canvas: the face as the page shows it. */
export function faceCanvas(img, box, alt, size = 160) {
  const c = h("canvas", { class: "crop", width: size, height: size, role: "img", "aria-label": alt });
  const paint = () => {
    const [x1, y1, x2, y2] = box;
    const side = Math.max(x2 - x1, y2 - y1) * 1.5;
    const cx = (x1 + x2) / 2;
    const cy = (y1 + y2) / 2;
    const ctx = c.getContext("2d");
    ctx.fillStyle = "#e5e9ef";
    ctx.fillRect(0, 0, size, size);
    ctx.drawImage(img, cx - side / 2, cy - side / 2, side, side, 0, 0, size, size);
  };
  if (img.complete && img.naturalWidth) paint();
  else img.addEventListener("load", paint, { once: true });
  return c;
}
