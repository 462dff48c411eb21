// Typesets the formulas pymdownx.arithmatex marks (generic mode: \( \) inline, \[ \] display)
// with the KaTeX files served from this site, so the pages need no network.
document$.subscribe(({ body }) => {
  renderMathInElement(body, {
    delimiters: [
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
    throwOnError: false,
  });
});
