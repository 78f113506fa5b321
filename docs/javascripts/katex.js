// Math rendering without the network: KaTeX is bundled in docs/javascripts/katex/
// (version and licence in its LICENSE file; refresh with `npm pack katex`).
// pymdownx.arithmatex (generic mode) wraps inline math in \( \) and display math in \[ \],
// inside elements of class "arithmatex"; only those are rendered.
document$.subscribe(({ body }) => {
  for (const el of body.querySelectorAll(".arithmatex")) {
    renderMathInElement(el, {
      delimiters: [
        { left: "\\[", right: "\\]", display: true },
        { left: "\\(", right: "\\)", display: false },
      ],
      throwOnError: false,
    });
  }
});
