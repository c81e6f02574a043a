"""The site's command reference, made from the click commands themselves (an MkDocs hook: mkdocs.yml
`hooks:`). A page line

    ::: ptx-cli train

becomes `ptx train`'s help as a page: its description, usage, a table of its options (the default
as `--help` shows it), its epilog, and for a group its commands. It replaces mkdocs-click, which
printed click 8.3's internal `Sentinel.UNSET` as the default of every option without one, joined the
example lines that `--help` keeps one per line into a paragraph, and left out epilogs (`ptx train`'s
dataset list).

Help text is Markdown on the page: a paragraph click keeps as it is (marked `\\b`, the example lines)
becomes a code block, and `<`, `*` and `|` outside backticks are escaped so that `<root>/MNIST/raw` or
`photos/*.jpg` show as typed."""
from __future__ import annotations

import inspect
import re

import click

DIRECTIVE = re.compile(r"^::: ptx-cli(?P<path>(?: [\w-]+)*)\s*$", re.M)
CODE_SPAN = re.compile(r"(`[^`]*`)")


def escape(text: str) -> str:
    """``text`` as Markdown shows it literally, backtick spans kept as code."""
    parts = CODE_SPAN.split(text)
    for i in range(0, len(parts), 2):  # the even parts lie outside backticks
        parts[i] = (parts[i].replace("\\", "\\\\").replace("<", "&lt;").replace("*", "\\*").replace("|", "\\|")
                    .replace("_", "\\_"))
    return "".join(parts)


def blocks(help_text: str) -> list[str]:
    """click's help text as Markdown blocks: paragraphs rewrapped, `\\b` paragraphs as code blocks."""
    out = []
    for paragraph in re.split(r"\n\s*\n", inspect.cleandoc(help_text)):
        lines = paragraph.split("\n")
        if lines[0].strip() == "\b" and out and out[-1].startswith("```text"):  # one block for a run of them
            out[-1] = out[-1][:-len("\n```")] + "\n\n" + "\n".join(lines[1:]) + "\n```"
        elif lines[0].strip() == "\b":
            out.append("```text\n" + "\n".join(lines[1:]) + "\n```")
        elif paragraph.strip():
            out.append(escape(" ".join(line.strip() for line in lines)))
    return out


def default_of(param: click.Parameter, ctx: click.Context) -> str:
    """The default as `--help` shows it (only where the option asks to show it), else a dash."""
    if hasattr(param, "get_help_extra"):  # click >= 8.2
        shown = param.get_help_extra(ctx).get("default")
    else:
        record = param.get_help_record(ctx)
        found = re.search(r"\[default: ([^;\]]*)", record[1]) if record else None
        shown = found.group(1) if found else None
    return f"`{shown}`" if shown not in (None, "") else "-"


def option_row(param: click.Option, ctx: click.Context) -> str:
    names = ", ".join(f"`{name}`" for name in [*param.opts, *param.secondary_opts])
    value = "" if param.is_flag else f"`{param.make_metavar(ctx)}`"
    what = escape(" ".join((param.help or "").split())) or "-"
    return f"| {names} | {value} | {what} | {default_of(param, ctx)} |"


def command_markdown(command: click.Command, path: str, parent: click.Context | None = None) -> str:
    """One command's reference, under the page's own title. ptx's own commands are linked to their
    pages; a subgroup's commands (`ptx data list`) follow on its page, each under a heading."""
    # The command's own settings, as click makes its context (ptx's -h is one of them).
    ctx = command.context_class(command, info_name=path.split()[-1], parent=parent, **command.context_settings)
    formatter = ctx.make_formatter()
    formatter.write_usage(ctx.command_path, " ".join(command.collect_usage_pieces(ctx)), prefix="")
    parts = blocks(command.help or command.short_help or "")
    parts += ["**Usage:**", "```text\n" + formatter.getvalue().strip() + "\n```"]
    options = [p for p in command.get_params(ctx) if isinstance(p, click.Option) and not p.hidden]
    if options:
        # In a div the site's stylesheet knows (docs/stylesheets/extra.css: option names never break).
        parts += ["**Options:**", '<div class="ptx-cli" markdown>\n\n| option | value | what it does | default |\n'
                  "| --- | --- | --- | --- |\n" + "\n".join(option_row(p, ctx) for p in options) + "\n\n</div>"]
    if command.epilog:
        parts += blocks(command.epilog)
    # Asked for by name: ptx's group imports each command's module only then (ptx/cli/__init__.py).
    found = [(name, command.get_command(ctx, name)) for name in command.list_commands(ctx)] \
        if isinstance(command, click.Group) else []
    subcommands = sorted((name, sub) for name, sub in found if sub is not None and not sub.hidden)
    if subcommands and parent is None:
        rows = [f"| [`{path} {name}`]({name}.md) | {escape(sub.get_short_help_str(300))} |" for name, sub in subcommands]
        parts += ["**Commands:**", "| command | what it does |\n| --- | --- |\n" + "\n".join(rows)]
    for name, sub in subcommands if parent is not None else ():
        parts += [f"## {path} {name}", command_markdown(sub, f"{path} {name}", ctx).rstrip()]
    return "\n\n".join(parts) + "\n"


def resolve(path: list[str]) -> tuple[click.Command, click.Context | None]:
    """`["data", "list"]` -> (ptx's `data list` command, the context of its group)."""
    from ptx.cli import cli

    command, parent, info_name = cli, None, "ptx"
    for name in path:
        parent = command.context_class(command, info_name=info_name, parent=parent, **command.context_settings)
        command, info_name = command.get_command(parent, name), name
    return command, parent


def expand(markdown: str) -> str:
    """Every `::: ptx-cli PATH` line of a page replaced by that command's reference."""
    def one(match: re.Match) -> str:
        path = match.group("path").split()
        command, parent = resolve(path)
        return command_markdown(command, " ".join(["ptx", *path]), parent)

    return DIRECTIVE.sub(one, markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - MkDocs' hook signature
    return expand(markdown) if "::: ptx-cli" in markdown else markdown
