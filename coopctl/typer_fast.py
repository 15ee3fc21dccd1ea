"""Where coopctl reaches into Typer beyond its documented API: here, and nowhere else.

Typer (0.29) builds a click command from each function and parses the line; coopctl adds to
that, on the root group alone:

- **global options anywhere** (SPEC section 2): `--db`, `--config` and `--operator` given after
  the command's name (`coopctl list --db x.db`) are moved before it, then the root parses them as
  usual. The command's own options are read from its declaration, so a value that happens to be
  `--db` (`--note --db`) stays the note's, and nothing after `--` moves.
- **help without type noise, with choices** (SPEC section 4): every option and argument that
  does not name its metavar gets one (`--at TS`, `ORDER`, `--note TEXT` instead of `<str>`,
  `<int>`); an option with a known set of values (`CHOICES` of the group: `--form`, `--status`,
  `--format` …, or a Typer `Literal`/`Enum` type) lists them in its help and completes them in
  the shell. Commands added later get the same without declaring anything.
- **no pydantic for the root's options**: Typer 0.29 coerces every option through a pydantic
  TypeAdapter, built the first time the option is processed, even when absent. The root's
  options are processed before any command, so `coopctl COMMAND --help` (and completion) would
  import pydantic (about a third of a second on a busy machine: twice Typer's own start-up) for
  nothing. Text options and flags of the root get a pass-through coercion instead.

The private names used (`typer._coercion.RuntimeParam`, `type_descriptor`, `_runtime_param`,
`display_type_rich`, `typer._click.shell_completion.CompletionItem`) are checked by
tests/test_conventions.py::test_the_typer_internals_coopctl_relies_on_are_there, which fails
loudly when a new Typer moves them; the behaviour they serve is tested there too.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from typer.core import TyperGroup

# (command path or None, option) -> its values; the command path is "list" or "notifications retry"
ChoiceTable = Mapping[tuple[str | None, str], tuple[str, ...]]
SHORT_CHOICES = 32  # characters of "[a|b|c]" beyond which the choices go into the help text instead


class FastGroup(TyperGroup):
    """The root group. Subclasses say which options are global and which values an option takes."""

    global_options: frozenset[str] = frozenset()  # the root's options that take a value, moved to the front
    choices: ChoiceTable = {}
    metavars: Mapping[str, str] = {}  # option -> metavar, for options that name none

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        _taken_as_given(self.params)  # Typer appends the completion options after building the group
        if ctx.resilient_parsing:  # the shell asks for completions
            _plain_completion_help()
        return super().parse_args(ctx, self.lifted(ctx, list(args)))

    def get_command(self, ctx, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            tidy(command, cmd_name, self.choices, self.metavars)
            if ctx.resilient_parsing:  # the shell asks for completions: no value typed so far is used
                _taken_as_given(_all_params(ctx, command), everything=True)
        return command

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            _taken_as_given([option])
        return option

    def lifted(self, ctx, args: list[str]) -> list[str]:
        """`args` with the global options after the command's name moved before it."""
        own = _value_options(self.params)
        i = 0
        while i < len(args) and args[i].startswith("-") and args[i] not in ("-", "--"):
            i += 1 + (args[i] in own)  # the root's own options, up to the command's name
        if i >= len(args) or args[i] == "--":
            return args
        command = TyperGroup.get_command(self, ctx, args[i])
        if command is None:  # a mistyped name: Typer says so, as always
            return args
        moved, kept = self._scan(ctx, command, args[i + 1 :])
        return [*args[:i], *moved, args[i], *kept]

    def _scan(self, ctx, command, tokens: list[str]) -> tuple[list[str], list[str]]:
        takes = _value_options(command.params)
        moved: list[str] = []
        kept: list[str] = []
        j = 0
        while j < len(tokens):
            token = tokens[j]
            if token == "--":
                kept.extend(tokens[j:])
                break
            flag = token.split("=", 1)[0] if token.startswith("--") else token
            if flag in self.global_options and flag not in takes:
                if "=" in token:
                    moved.append(token)
                    j += 1
                    continue
                if j + 1 >= len(tokens):
                    ctx.fail(f"Option '{flag}' requires an argument.")
                moved.extend(tokens[j : j + 2])
                j += 2
                continue
            if token in takes:
                kept.extend(tokens[j : j + 1 + takes[token]])
                j += 1 + takes[token]
                continue
            if not token.startswith("-") and isinstance(command, TyperGroup):
                sub = command.get_command(ctx, token)
                if sub is not None:  # a group's subcommand (`notifications retry`): its options from here on
                    more_moved, more_kept = self._scan(ctx, sub, tokens[j + 1 :])
                    return [*moved, *more_moved], [*kept, token, *more_kept]
            kept.append(token)
            j += 1
        return moved, kept


def _value_options(params: Iterable[Any]) -> dict[str, int]:
    """option name -> how many values follow it, for the options of `params` that take values."""
    takes: dict[str, int] = {}
    for param in params:
        if getattr(param, "param_type_name", None) != "option" or param.is_flag or param.count:
            continue
        for opt in [*param.opts, *param.secondary_opts]:
            takes[opt] = max(1, param.nargs)
    return takes


# ----------------------------------------------------------------------------- help and completion


def tidy(command, path: str, choices: ChoiceTable, metavars: Mapping[str, str]) -> None:
    """Name every parameter's value in help (no `<str>`), list and complete known choices. Once per command."""
    if getattr(command, "_coopctl_tidy", False):
        return
    command._coopctl_tidy = True
    for param in command.params:
        kind = getattr(param, "param_type_name", None)
        if kind == "argument":
            if param.metavar is None:
                param.metavar = param.name.upper()
            param.display_type_rich = _no_type  # the metavar says it: `ORDER`, not `ORDER <int>`
        elif kind == "option" and not param.is_flag and not param.count:
            long = next((o for o in param.opts if o.startswith("--")), param.opts[0])
            allowed = _choices_of(param, path, long, choices)
            if allowed:
                _offer(param, long, allowed)
            elif param.metavar is None:
                param.metavar = metavars.get(long) or _by_type(param)
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            tidy(sub, f"{path} {name}", choices, metavars)


def _choices_of(param, path: str, option: str, choices: ChoiceTable) -> tuple[str, ...] | None:
    found = choices.get((path, option)) or choices.get((None, option))
    if found:
        return tuple(found)
    described = getattr(param, "type_descriptor", None)
    if described is not None and described.is_choice:  # a Literal or Enum type: Typer's own choices
        return tuple(str(getattr(c, "value", c)) for c in described.choices)
    return None


def _offer(param, option: str, allowed: tuple[str, ...]) -> None:
    short = "[" + "|".join(allowed) + "]"
    if param.metavar is None:
        param.metavar = short if len(short) <= SHORT_CHOICES else option.lstrip("-").upper().replace("-", "_")
    if len(short) > SHORT_CHOICES or not param.metavar.startswith("["):
        listed = f"One of: {', '.join(allowed)}."
        param.help = f"{param.help.rstrip()} {listed}" if param.help else listed
    if getattr(param, "_custom_shell_complete", None) is None:
        param.shell_complete = _completer(allowed)


def _completer(allowed: tuple[str, ...]) -> Callable:
    def complete(ctx, incomplete: str):
        from typer._click.shell_completion import CompletionItem

        return [CompletionItem(value) for value in allowed if value.startswith(incomplete or "")]

    return complete


def _no_type(ctx) -> None:
    return None


def _by_type(param) -> str:
    described = getattr(param, "type_descriptor", None)
    annotation = getattr(described, "annotation", str)
    inner = getattr(annotation, "__args__", None)
    if inner and getattr(annotation, "__origin__", None) is list:
        annotation = inner[0]
    return "N" if annotation is int else "NUMBER" if annotation is float else "TEXT"


# ----------------------------------------------------------------------------- no pydantic at the root


def _plain_completion_help() -> None:
    """zsh and fish show each completion's help; Typer renders it through rich first (for markup
    that coopctl's plain help does not use: rich_markup_mode=None), which costs rich's import,
    wraps long help into lines that fish reads as more candidates, and drops `[default: now]` as
    a markup tag. Without rich installed Typer passes the text through: so does coopctl."""
    try:
        from typer import _completion_classes
    except ImportError:  # pragma: no cover - another Typer
        return
    if hasattr(_completion_classes, "_sanitize_help_text"):
        _completion_classes._sanitize_help_text = _as_text


def _as_text(text: str) -> str:
    return text


def _all_params(ctx, command) -> list:
    """The parameters of `command` and of its subcommands, their help options included."""
    found = [*command.params, command.get_help_option(ctx)]
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            found.extend(_all_params(ctx, sub))
    return [p for p in found if p is not None]


def _taken_as_given(params, *, everything: bool = False) -> None:
    """Text options and flags among `params` (with `everything`, all of them: completion, whose
    values nobody reads) coerce to themselves (see the module's docstring). With another Typer
    whose internals differ, nothing changes but the speed (and the test fails)."""
    try:
        from typer._coercion import RuntimeParam
    except ImportError:  # pragma: no cover - another Typer: pydantic does it
        return

    class AsGiven(RuntimeParam):
        def _coerce_value(self, value, param, ctx):
            return value

    for param in params:
        described = getattr(param, "type_descriptor", None)
        if described is None or getattr(param, "_runtime_param", False) is not None:
            continue
        plain = described.annotation is str or (described.annotation is bool and getattr(param, "is_flag", False))
        if everything or (plain and not param.multiple and described.parameter_info.parser is None):
            param._runtime_param = AsGiven(parameter_info=described.parameter_info, annotation=described.annotation)
