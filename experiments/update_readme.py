"""Copy the committed result tables into README.md, so every number there comes from a results file.

    python experiments/update_readme.py

README holds blocks `<!-- RESULT path/to/table.md -->` ... `<!-- /RESULT -->`; each is replaced by that file.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- RESULT (\S+) -->\n)(.*?)(<!-- /RESULT -->)", re.S)


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()

    def fill(m):
        src = ROOT / m.group(2)
        body = src.read_text().strip() if src.exists() else f"(missing: {m.group(2)})"
        body = re.sub(r"^###+ ", "**", body, count=1, flags=re.M)  # the table's own heading -> bold caption
        first, _, rest = body.partition("\n")
        if first.startswith("**"):
            body = first + "**\n" + rest
        return m.group(1) + body + "\n" + m.group(4)

    readme.write_text(BLOCK.sub(fill, text))
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
