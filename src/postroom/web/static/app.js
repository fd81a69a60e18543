// Small progressive enhancements; every page works without JavaScript.
document.addEventListener("DOMContentLoaded", () => {
  // <button data-open="dialog-id"> opens a <dialog>; links inside keep working without JS.
  document.querySelectorAll("[data-open]").forEach((button) => {
    const dialog = document.getElementById(button.dataset.open);
    if (!dialog || typeof dialog.showModal !== "function") return;
    button.addEventListener("click", (event) => { event.preventDefault(); dialog.showModal(); });
  });
  document.querySelectorAll("[data-close]").forEach((button) => {
    button.addEventListener("click", () => button.closest("dialog").close());
  });
  // Forms that would reset later wizard steps ask first; cancelling changes nothing.
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); return; }
      const flag = form.querySelector("input[name=confirm_reset]");
      if (flag) flag.value = "yes";
    });
  });
  // Category rows: add another row by cloning the last one.
  const add = document.getElementById("add-category");
  if (add) {
    add.addEventListener("click", () => {
      const rows = document.querySelectorAll(".category-row");
      const last = rows[rows.length - 1];
      const copy = last.cloneNode(true);
      copy.querySelectorAll("input").forEach((input) => {
        input.value = "";
        input.removeAttribute("aria-invalid");
        input.removeAttribute("aria-describedby");
      });
      copy.querySelectorAll(".field-error").forEach((error) => error.remove());
      copy.classList.remove("invalid");
      last.after(copy);
    });
  }
});

// The personal connect page: the "Permissions requested" list follows the ticked options, and
// two options that contradict each other ("minimal" and "manage colours") cannot both be on.
// Without JavaScript the page lists every permission with when it is asked for.
document.addEventListener("DOMContentLoaded", () => {
  const options = document.querySelectorAll("input[data-permission-option]");
  if (!options.length) return;
  const all = document.querySelector("[data-permissions-all]");
  const byId = (id) => document.getElementById(id);
  const show = () => {
    options.forEach((box) => {
      const other = byId(box.dataset.excludes || "");
      if (other) other.disabled = box.checked;
    });
    const shared = byId("shared-access")?.checked ? "1" : "0";
    const level = byId("minimal")?.checked ? "minimal" : byId("manage-colours")?.checked ? "colours" : "standard";
    if (all) all.hidden = true;
    document.querySelectorAll("[data-permissions]").forEach((list) => {
      list.hidden = list.dataset.permissions !== `${shared}-${level}`;
    });
  };
  options.forEach((box) => box.addEventListener("change", () => {
    const other = byId(box.dataset.excludes || "");
    if (box.checked && other) other.checked = false;
    show();
  }));
  show();
});

// A colour <select data-swatch> shows the chosen colour in the swatch beside it, as Outlook does.
document.addEventListener("change", (event) => {
  const select = event.target;
  if (!(select instanceof HTMLSelectElement) || !select.hasAttribute("data-swatch")) return;
  const swatch = select.parentElement.querySelector(".swatch");
  const option = select.selectedOptions[0];
  if (swatch && option) swatch.dataset.colour = option.dataset.hex || "";
});

// Pages with changing state (status, sync, existing-mail progress, activity) refresh the parts
// marked data-live (each with an id) every 10 s while the tab is visible: the page is fetched
// again and only those parts are swapped, so scrolling and typing elsewhere are kept. A part
// holding the focus is left alone until the next round.
document.addEventListener("DOMContentLoaded", () => {
  if (!document.querySelector("[data-live][id]")) return;
  const EVERY = 10000;
  let timer = null;
  let busy = false;
  const refresh = async () => {
    if (busy || document.visibilityState !== "visible") return;
    busy = true;
    try {
      const answer = await fetch(window.location.href, { credentials: "same-origin", headers: { "X-Live-Refresh": "1" } });
      if (!answer.ok || answer.redirected) return;
      const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
      document.querySelectorAll("[data-live][id]").forEach((part) => {
        const next = fresh.getElementById(part.id);
        if (!next || part.contains(document.activeElement)) return;
        if (next.innerHTML !== part.innerHTML) part.replaceWith(document.importNode(next, true));
      });
    } catch (error) {
      // offline for a moment: the next round tries again
    } finally {
      busy = false;
    }
  };
  const start = () => { if (timer === null) timer = window.setInterval(refresh, EVERY); };
  const stop = () => { if (timer !== null) { window.clearInterval(timer); timer = null; } };
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") { refresh(); start(); } else { stop(); }
  });
  start();
});
