"""Numbers on screen, shared by the commands' tables."""


def sig(x: float) -> str:
    """Three significant digits, thousands separated: 0.187, 35.2, 1,032."""
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"
