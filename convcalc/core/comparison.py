"""``compare``'s result: standard, grouped and depthwise-separable versions side by side. Kept
out of :mod:`convcalc.core.report` (which re-exports it) so that a layer's command does not
build it (start-up)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convcalc._dataclass import dataclass
from convcalc._version import __version__

if TYPE_CHECKING:
    from convcalc.core.report import Report
    from convcalc.core.spec import InputSpec


@dataclass(frozen=True)
class Comparison:
    """Standard, grouped and depthwise-separable versions of one layer, side by side."""

    input: InputSpec
    versions: tuple[tuple[str, Report], ...]
    ratios: dict[str, dict[str, Any]]
    theory_text: dict[str, str]
    #: --roofline: one line naming the bound of each version, and why (engine.roofline_why)
    why: str = ""

    @property
    def agree(self) -> bool:
        return all(report.agree for _, report in self.versions)

    @property
    def disagreements(self) -> list[str]:
        return [f"{name}: {found}" for name, r in self.versions for found in r.disagreements]

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(w for _, r in self.versions for w in r.warnings))

    def with_conventions(self) -> Comparison:
        from dataclasses import replace

        return replace(self, versions=tuple((n, r.with_conventions()) for n, r in self.versions))

    def to_dict(self) -> dict[str, Any]:
        return {
            "convcalc_version": __version__,
            "command": "compare",
            "input_shape": list(self.input.shape),
            "dtype": self.input.dtype,
            "versions": [
                {
                    "name": name,
                    **report.to_dict(),
                    "ratio_to_standard": self.ratios[name],
                    "theory": self.theory_text[name],
                }
                for name, report in self.versions
            ],
            "agree": self.agree,
            **({"roofline_why": self.why} if self.why else {}),
        }
