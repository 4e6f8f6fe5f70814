"""What the commands share: config options and loading (mapped onto the stages' settings), value parsing."""

from __future__ import annotations

import click

from ..errors import FourdError


def shipped_text(*sections: str) -> str:
    """'a, b or c: the configs shipped in the package that configure this stage' (or the one such config)."""
    from ..config import shipped_configs

    names = shipped_configs(*sections)
    if len(names) == 1:
        return f"{names[0]}: the config shipped in the package"
    return ", ".join(names[:-1]) + " or " + names[-1] + ": the configs shipped in the package that configure it"


def config_option(section: str):
    # a plain string, not click.Path(dir_okay=False): `--config release` names the shipped config even where a
    # folder release/ (that config's output) exists; a folder given as a path fails in load_config
    return click.option("--config", "config_path", type=str,
                        help=f"YAML config file (its '{section}:' section is used), or {shipped_text(section)}.")


class ConfigOption(click.Option):
    """An option that overrides one config key. Its ``[default: …]`` is read from the config schema, the one
    place a default is written; the option's own default is None ("not given: the config decides")."""

    def __init__(self, decls, *, section: str, key: str, default_text: str | None = None, **kw):
        from ..config import schema_field, show

        self.section, self.config_key = section, key
        shown = default_text if default_text is not None else show(schema_field(section, key).default)
        kw["help"] = f"{kw.get('help', '')} [default: {shown}]".strip()
        kw.setdefault("default", None)
        super().__init__(decls, **kw)


def opt(section: str, key: str, *decls, **kw):
    """``click.option`` for config key ``key`` of ``section`` (see :class:`ConfigOption`)."""
    return click.option(*decls, cls=ConfigOption, section=section, key=key, **kw)


def load(section: str, config_path) -> dict:
    """The stage's config: schema defaults <- ``--config`` file <- the options given on this command line. A bad
    value is reported under the option's name."""
    from ..config import load_config

    ctx = click.get_current_context()
    opts = [p for p in ctx.command.params if isinstance(p, ConfigOption)]
    return load_config(section, config_path, {p.config_key: ctx.params[p.name] for p in opts},
                       names={p.config_key: p.opts[0] for p in opts})


def load_explicit(section: str, config_path, overrides: dict) -> dict:
    """``load_config`` for a command that builds its overrides itself (values parsed or renamed on the way):
    a bad value is still reported under the option's name. Each key is matched to the option of the same name
    (its last part: ``mp.timeout_s`` → ``timeout_s``), else to the one option whose value it is."""
    from ..config import load_config

    ctx = click.get_current_context()
    params = [p for p in ctx.command.params if isinstance(p, click.Option)]
    names = {}
    for key, value in overrides.items():
        if value is None:
            continue
        last = key.rsplit(".", 1)[-1]
        same = [p for p in params if p.name == last or p.name == last.rsplit("_", 1)[0]]
        if not same:
            same = [p for p in params if ctx.params.get(p.name) is value]
        if len(same) == 1:
            names[key] = same[0].opts[0]
    return load_config(section, config_path, overrides, names=names)


def parse_strain_pct(text: str | None) -> float | list[float] | None:
    """--strain-pct: one number (a range bound) or three (a fixed tensor), in %."""
    values = parse_floats(text, "--strain-pct")
    if values is None:
        return None
    if len(values) not in (1, 3):
        raise FourdError(f"--strain-pct {text!r}: expected one number S or three EXX,EYY,EXY (in %)")
    return values[0] if len(values) == 1 else values


def parse_floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    from ..config import split_items

    try:
        return [float(v) for v in split_items(str(text).replace(";", ","))]
    except ValueError:
        raise FourdError(f"{what} {text!r}: expected comma-separated numbers, e.g. 100,200") from None


def match_radius_option(section: str):
    return opt(section, "match_radius_px", "--match-radius", type=float,
                help="A peak within this many pixels of a reflection's exact position counts as found (at most half "
                     "the spacing of the pattern's visible reflections).")


def parse_pair(text: str | None, option: str, kind=float, sep: str = ","):
    """``"A,B"`` (or ``"AxB"`` with sep="x") → (A, B); one line naming the option when malformed."""
    if text is None:
        return None
    parts = text.lower().split(sep)
    try:
        if len(parts) != 2:
            raise ValueError
        return kind(parts[0]), kind(parts[1])
    except ValueError:
        raise FourdError(f"{option} {text!r}: expected two numbers separated by {sep!r}") from None


def network_options(section: str):
    """--tta and --precision, as evaluate and predict take them."""
    tta = opt(section, "tta", "--tta", type=click.Choice(["none", "flips", "d4"]),
              help="Test-time mirrors: average the network over the pattern's mirrors about the zero beam (flips: 4 "
                   "passes, d4: 8; that many times the network time). Measured in docs/model.md, \"Test-time "
                   "mirrors\".")
    precision = opt(section, "precision", "--precision", type=click.Choice(["auto", "fp32", "bf16"]),
                    help="The network's arithmetic: fp32, bf16 (its convolutions in bfloat16 under autocast, the FFTs "
                         "in float32: about twice the network's speed on a CPU with AVX-512 BF16, and the fp32 F1 to "
                         "±0.001 on the test split, docs/reference.md), or auto: bf16 where the CPU or GPU does it in "
                         "hardware and the network is 16 or more channels wide, else fp32.")
    return lambda f: tta(precision(f))
