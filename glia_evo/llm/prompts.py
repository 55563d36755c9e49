"""Prompt templates: `string.Template` files (`$name` placeholders) shipped in glia_evo/prompts/.

`Prompts(override_dir)` looks in `override_dir` first (the `llm.prompts_dir` setting), then in the
package. A template that names a placeholder the agent does not fill is an error (KeyError), so a
typo in an edited prompt fails loudly at the first call instead of sending "$notse" to a model.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from string import Template

PACKAGE = "glia_evo.prompts"
NAMES = ("researcher_system", "researcher", "researcher_repair", "inspiration",
         "analyst_system", "analyst", "supervisor_system", "supervisor",
         "researcher_experiments", "researcher_conclude")


class Prompts:
    def __init__(self, override_dir: str | Path | None = None):
        self.override = Path(override_dir) if override_dir else None
        self._cache: dict[str, Template] = {}

    def text(self, name: str) -> str:
        if self.override is not None:
            path = self.override / f"{name}.md"
            if path.is_file():
                return path.read_text(encoding="utf-8")
        return resources.files(PACKAGE).joinpath(f"{name}.md").read_text(encoding="utf-8")

    def template(self, name: str) -> Template:
        if name not in self._cache:
            self._cache[name] = Template(self.text(name))
        return self._cache[name]

    def render(self, name: str, **fields) -> str:
        return self.template(name).substitute({k: str(v) for k, v in fields.items()}).strip()
