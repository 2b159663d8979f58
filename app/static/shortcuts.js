// Annotation shortcuts (listed on the page): 1-8 add completion A-H to the ranking,
// '=' ties the last two, Backspace removes the last letter, Enter submits, S skips.
// They act only when focus is not in a text field, so typing stays typing.
(() => {
  const field = () => document.querySelector("#ranking textarea, #ranking input");
  const setRanking = (text) => {
    const input = field();
    if (!input) return;
    input.value = text;
    input.dispatchEvent(new Event("input", { bubbles: true }));
  };
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const typing = target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.isContentEditable);
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const current = (field()?.value || "").trim();
    if (/^[1-8]$/.test(event.key)) {
      const letter = String.fromCharCode(64 + Number(event.key));
      setRanking(current ? `${current} > ${letter}` : letter);
    } else if (event.key === "=") {
      setRanking(current.replace(/ > ([A-H])$/, " = $1"));
    } else if (event.key === "Backspace") {
      setRanking(current.replace(/\s*[>=]?\s*[A-H]$/, ""));
    } else if (event.key === "Enter") {
      document.querySelector("#submit")?.click();
    } else if (event.key === "s" || event.key === "S") {
      document.querySelector("#skip")?.click();
    } else {
      return;
    }
    event.preventDefault();
  });
})();
