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
