"""OpenAI's API on the REST front, for the served models that generate and have their tokenizer beside their
file (``ptx export DIR`` keeps it there): ``GET /v1/models`` (and ``/v1/models/NAME``), ``POST
/v1/completions`` and ``/v1/chat/completions``, answered whole or streamed as server-sent events ending with
``data: [DONE]``; and ``POST /v1/embeddings`` for those that embed (a sentence-transformers folder's export). The
server's token (``Authorization: Bearer``, what the openai client sends as its api_key), its body limit, its
new-token cap and its batch size apply as to every other request; every refusal is
OpenAI's error object with the status OpenAI would give, found before any step runs (in a stream, an error
after the first event is an event of its own). The protocol is openai_api.py's; the answers come from one
function (text_answers.py)."""
from __future__ import annotations

import time
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ptx.contract.grammar import GrammarError
from ptx.contract.sampling import Sampling, SamplingError
from ptx.errors import InputError, first_line
from ptx.extras import MissingExtraError
from ptx.infer.model.embedding import TooLongError
from ptx.infer.model.text_generation import Answers, end_ids
from ptx.infer.model.tool_calls import reads_tools, syntax_of

from .body import read_body
from .openai_api import (DONE, OpenAIError, Reply, TextRequest, chat_logprobs, completion_logprobs, event,
                         parse_request, usage)
from .openai_embeddings import check_dimensions, embeddings_reply, parse_embeddings
from .openai_tools import listed as listed_calls
from .openai_tools import streamed as streamed_call
from .text_answers import Piece, Prompted, answers
from .tensors import RequestError

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]  # routed, so that the wrong one gets OpenAI's 405
OPENAI_DEFAULTS = {"temperature": 1.0}  # OpenAI samples unless told temperature 0; a model's generation config wins
COMPLETION_MAX_TOKENS = 16  # OpenAI's default for a completion; a chat's is what the positions leave
PROTOCOL = "openai"  # the metrics' protocol label


def openai_routes(service) -> list[Route]:
    started = int(time.time())

    def listed(name: str) -> dict:
        return {"id": name, "object": "model", "created": started, "owned_by": "ptx"}

    async def models(request: Request) -> Response:
        if not service.authorized(request.headers.get("authorization")):
            return _error(_unauthorized())
        name = request.path_params.get("model")
        if name is None:
            return JSONResponse({"object": "list", "data": [listed(n) for n in _talking(service)]})
        if name not in _talking(service):
            return _error(_unknown(service, name))
        return JSONResponse(listed(name))

    async def elsewhere(request: Request) -> Response:
        return _error(OpenAIError(f"ptx serve has no {request.method} {request.url.path}: it answers /v1/models, "
                                  "/v1/completions, /v1/chat/completions and /v1/embeddings", 404))

    return [Route("/v1/models", models), Route("/v1/models/{model}", models),
            Route("/v1/completions", _endpoint(service, "completion"), methods=METHODS),
            Route("/v1/chat/completions", _endpoint(service, "chat"), methods=METHODS),
            Route("/v1/embeddings", _embeddings(service), methods=METHODS),
            Route("/v1/{rest:path}", elsewhere, methods=METHODS)]


def _generating(service) -> list[str]:
    return [name for name, model in service.models.items() if model.generator is not None]


def _talking(service) -> list[str]:
    """The models the API answers: those that generate, and those that embed."""
    return [name for name, model in service.models.items() if model.generator is not None or model.embedder is not None]


def _unauthorized() -> OpenAIError:
    return OpenAIError("missing or wrong API key: send `Authorization: Bearer <token>` (the openai client's api_key)",
                       401, code="invalid_api_key")


def _unknown(service, name: str) -> OpenAIError:
    served = ", ".join(_talking(service)) or "none that generates or embeds"
    return OpenAIError(f"The model {name!r} does not exist; this server serves {served}", 404, param="model",
                       code="model_not_found")


def _openai(exc: RequestError) -> OpenAIError:
    return exc if isinstance(exc, OpenAIError) else OpenAIError(str(exc), exc.status)


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse(_openai(exc).document(), exc.status)


def _endpoint(service, kind: str):
    """The Starlette endpoint of ``kind`` ("chat" or "completion") over ``service``'s models."""
    path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"

    async def handle(request: Request) -> Response:
        started = time.perf_counter()
        observer = service.metrics.observer(None, PROTOCOL)
        try:
            if request.method != "POST":
                raise OpenAIError(f"{path} takes POST", 405)
            if not service.authorized(request.headers.get("authorization")):
                raise _unauthorized()
            body = await read_body(request.receive, service.options.max_request_bytes,
                                   request.headers.get("content-encoding", "identity").lower())
            asked = parse_request(body, kind)
            served = service.models.get(asked.model)
            if served is None or (served.generator is None and served.embedder is None):
                raise _unknown(service, asked.model)
            if served.generator is None:
                raise OpenAIError(f"{served.name} embeds texts and generates none: ask /v1/embeddings", param="model")
            observer = service.metrics.observer(served.name, PROTOCOL)
            prompts, sampling = _prepared(served, asked, service.options.max_batch_size)
            reply = Reply(kind, served.name)
            if asked.stream:
                return StreamingResponse(_events(served, reply, prompts, sampling, asked, observer, started),
                                         media_type="text/event-stream; charset=utf-8",
                                         headers={"cache-control": "no-cache"})
            made = None
            async with aclosing(_answers(served, prompts, sampling, asked)) as items:
                async for item in items:
                    made = item if isinstance(item, Answers) else made
        except RequestError as exc:  # an OpenAIError, or the body's or the model's refusal
            _observer(service, observer, exc).done(time.perf_counter() - started, exc.status)
            return _error(exc)
        except Exception as exc:  # noqa: BLE001 - the runtime failed on this request: a 500 for it alone
            observer.done(time.perf_counter() - started, 500)
            return _error(OpenAIError(f"generation failed: {first_line(exc)}", 500))
        observer.done(time.perf_counter() - started)
        return JSONResponse(reply.whole(_choices(served, asked, prompts, made), _usage(prompts, made, asked)))
    return handle


def _observer(service, observer, exc: RequestError):
    """Who counts a refusal: ``observer``, or where it was made before the model was looked up (a field of the
    body), the observer of the model the request names where it is served (the requests for a model not served
    are counted apart, without its name)."""
    named = getattr(exc, "model", None)
    if observer.model is None and named in service.models:
        return service.metrics.observer(named, PROTOCOL)
    return observer


def _embeddings(service):
    """The Starlette endpoint of /v1/embeddings over ``service``'s models that embed (openai_embeddings.py): each
    input's ids (InputError: OpenAI's 400 on input), then their vectors through the model's batcher."""
    async def handle(request: Request) -> Response:
        started = time.perf_counter()
        observer = service.metrics.observer(None, PROTOCOL)
        try:
            if request.method != "POST":
                raise OpenAIError("/v1/embeddings takes POST", 405)
            if not service.authorized(request.headers.get("authorization")):
                raise _unauthorized()
            body = await read_body(request.receive, service.options.max_request_bytes,
                                   request.headers.get("content-encoding", "identity").lower())
            asked = parse_embeddings(body)
            served = service.models.get(asked.model)
            if served is None or (served.generator is None and served.embedder is None):
                raise _unknown(service, asked.model)
            if served.embedder is None:
                raise OpenAIError(f"{served.name} generates text and has no embeddings: ask /v1/chat/completions or "
                                  "/v1/completions", param="model")
            observer = service.metrics.observer(served.name, PROTOCOL)
            check_dimensions(asked, served.name, served.embedder.embedding.dimensions)
            try:
                rows = [served.embedder.ids(item, f"input[{k}]") for k, item in enumerate(asked.inputs)]
            except InputError as exc:
                long = isinstance(exc, TooLongError)
                raise OpenAIError(str(exc), param="input", code="context_length_exceeded" if long else None) from None
            vectors = await served.embed(rows)
        except RequestError as exc:  # an OpenAIError, or the body's or the model's refusal
            _observer(service, observer, exc).done(time.perf_counter() - started, exc.status)
            return _error(exc)
        except Exception as exc:  # noqa: BLE001 - the runtime failed on this request: a 500 for it alone
            observer.done(time.perf_counter() - started, 500)
            return _error(OpenAIError(f"embedding failed: {first_line(exc)}", 500))
        observer.done(time.perf_counter() - started)
        reply = embeddings_reply(served.name, vectors, asked.encoding_format, sum(map(len, rows)))
        return Response(reply, media_type="application/json")
    return handle


def _answers(served, prompts, sampling: Sampling, asked: TextRequest):
    """The request's answers (text_answers.answers), with its prompts' own log-probabilities where it echoes
    them."""
    return answers(served, prompts, sampling, asked.n, prompt_logprobs=asked.echo and sampling.logprobs is not None)


def _prompt_only(asked: TextRequest) -> bool:
    """A completion's echo with max_tokens 0: its prompt (and its log-probabilities) alone; one token is made
    (the prompt's run gives it at no further cost) and left out."""
    return asked.echo and asked.max_tokens == 0


def _echoed(served, asked: TextRequest, row: int) -> str:
    """The prompt of answer ``row`` as an echo gives it: its text as sent, or its ids' text."""
    prompt = asked.prompts[row // asked.n]
    return prompt if isinstance(prompt, str) else served.text.decode(prompt)


def _choices(served, asked: TextRequest, prompts, made: Answers) -> list[tuple]:
    """Each answer as Reply.whole lists it: its text (after its echoed prompt), why it ended, its logprobs, and a
    chat's tool calls where it gives tools (its text then the text outside the calls)."""
    spell = served.text.token_bytes
    syntax = _reading_calls(served, asked)
    listed = []
    for row, answer in enumerate(made):
        text, reason, taken, calls = answer.text, answer.finish_reason, answer.logprobs, None
        if _prompt_only(asked):
            text, reason, taken = "", "length", [] if taken is not None else None
        if asked.echo:
            text = _echoed(served, asked, row) + text
        if syntax is not None:
            text, found = syntax.parse(text)
            calls = listed_calls(asked.tools.kept(found)) or None
            reason = "tool_calls" if calls else reason
        logprobs = None
        if taken is not None and asked.kind == "chat":
            logprobs = chat_logprobs(taken, spell)
        elif taken is not None:
            lead, before = None, []
            if asked.echo:
                lead, before = prompts[row // asked.n][0], answer.prompt_logprobs[1:]
            logprobs = completion_logprobs([*before, *taken], spell, lead=lead)
        listed.append((text, reason, logprobs, calls))
    return listed


def _reading_calls(served, asked: TextRequest):
    """The tool-call syntax an answer is read with: where the request gives tools and lets the model call them."""
    if asked.tools is None or asked.tools.choice == "none":
        return None
    return syntax_of(served.text)


def _prepared(served, asked: TextRequest, max_rows: int) -> tuple[list[list[int]], Sampling]:
    """(the prompts' token ids, the sampling) of a checked request: its text encoded (a chat rendered by the
    model's template), the model's generation config and OpenAI's defaults under what the client set, and
    the prompts, new tokens and answers within the model's positions and the server's caps."""
    text = served.text
    if text is None:
        raise OpenAIError(served.no_text or f"{served.name} has no tokenizer beside its file, so it takes no text: "
                          "export it with its tokenizer (ptx export DIR, or --tokenizer DIR), or send token ids to "
                          f"/v2/models/{served.name}/generate", param="model")
    rows = (1 if asked.kind == "chat" else len(asked.prompts)) * asked.n
    if rows > max_rows:  # before any text is encoded
        raise OpenAIError(f"{rows} answers in one request (n {asked.n} x {rows // asked.n} prompts): this server "
                          f"makes at most {max_rows} together (--max-batch-size)", param="n")
    syntax = _tool_syntax(served, asked)
    _fits_before_encoding(served, asked)
    try:
        if asked.kind == "chat":
            template_syntax = syntax if syntax is not None else syntax_of(text)  # calls sent back without tools too
            messages = asked.messages if template_syntax is None else template_syntax.conversation(asked.messages)
            prompts = [text.chat(messages, asked.tools.functions if asked.tools else None)]
        else:
            prompts = [text.encode(p) if isinstance(p, str) else p for p in asked.prompts]
    except InputError as exc:
        raise OpenAIError(str(exc), param="messages" if asked.kind == "chat" else "prompt") from None
    max_tokens = _max_tokens(served.generator, asked, prompts)
    _check_logprob_fields(served.generator, asked)
    try:
        served.generator.check([p for p in prompts for _ in range(asked.n)], max_tokens, max_rows)
    except RequestError as exc:
        raise OpenAIError(str(exc), exc.status) from None
    if syntax is not None and asked.tools.forced:  # the call's syntax, its arguments held to the function's schema
        asked.given["grammar"] = syntax.forced(asked.tools.functions, asked.tools.name)
    _check_grammar(served, asked)
    try:
        sampling = Sampling(**{**OPENAI_DEFAULTS, **text.sampling_defaults(), **asked.given}, max_new_tokens=max_tokens)
    except SamplingError as exc:
        raise OpenAIError(str(exc), param=exc.param) from None
    return prompts, sampling


SHORTENED = 3  # the most a normalizer shortens a text's bytes (NFKC: a fullwidth letter's 3 bytes to 1)


def _fits_before_encoding(served, asked: TextRequest) -> None:
    """OpenAI's context_length_exceeded where the request's text cannot fit the model's context whatever its
    tokens (its UTF-8 bytes over ``SHORTENED`` times the longest token's: a chat's messages together, each prompt
    of a completion alone), said before it is encoded: a tokenizer holds Python's lock as it encodes, and a text
    of 2 MB took seconds in which the server answered nothing, its health checks included."""
    positions = served.generator.generation.max_positions
    if positions is None or served.generator.generation.encoder is not None:
        return
    if asked.kind == "chat":
        sizes = [sum(len((m.get("content") or "").encode("utf-8", "surrogatepass")) for m in asked.messages)]
    else:
        sizes = [len(p.encode("utf-8", "surrogatepass")) for p in asked.prompts if isinstance(p, str)]
    size = max(sizes, default=0)
    if size < SHORTENED * positions:  # fits whatever the tokens: the vocabulary's longest token is not read
        return
    least = size // (SHORTENED * served.text.longest_token_bytes)
    if least >= positions:
        where = "messages" if asked.kind == "chat" else "prompt"
        raise OpenAIError(f"{served.generator.name}'s context is {positions} tokens; the {where} take at least {least} "
                          f"({size:,} bytes of text): shorten the {where}", param=where, code="context_length_exceeded")


def _max_tokens(generator, asked: TextRequest, prompts: list[list[int]]) -> int:
    """The request's max_tokens (by default OpenAI's 16 for a completion, what the positions leave for a chat),
    within the server's cap, and with the prompts within the model's context (else OpenAI's
    context_length_exceeded, naming the prompt where it alone fills the context)."""
    part = generator.generation.encoder  # an encoder-decoder's prompts are its sources: its answer follows its start
    positions = generator.generation.max_positions
    longest = len(part.start) if part is not None else max(map(len, prompts))
    max_tokens = 1 if _prompt_only(asked) else asked.max_tokens
    if max_tokens is None:
        room = generator.max_tokens if positions is None else positions - longest
        max_tokens = COMPLETION_MAX_TOKENS if asked.kind == "completion" else max(1, min(generator.max_tokens, room))
    try:
        generator.check_max_tokens(max_tokens)
    except RequestError as exc:
        raise OpenAIError(str(exc), exc.status, param="max_tokens") from None
    if positions is not None and longest + max_tokens > positions:
        where = "messages" if asked.kind == "chat" else "prompt"
        more = f" or ask for at most {positions - longest} new tokens" if longest < positions else ""
        takes = "take" if where == "messages" else "takes"
        raise OpenAIError(f"{generator.name}'s context is {positions} tokens; the {where} {takes} {longest} and "
                          f"max_tokens {max_tokens} more: shorten the {where}{more}",
                          param=where if longest >= positions else "max_tokens", code="context_length_exceeded")
    return max_tokens


def _check_logprob_fields(generator, asked: TextRequest) -> None:
    """logit_bias's ids within the model's vocabulary, and an echo's log-probabilities from a decoder-only model
    (an encoder-decoder's prompt is its encoder's source): else OpenAI's 400 naming the field."""
    vocab = generator.vocab
    outside = [t for t, _ in asked.given.get("logit_bias", ()) if vocab is not None and t >= vocab]
    if outside:
        raise OpenAIError(f"logit_bias: token id {outside[0]} is outside {generator.name}'s vocabulary (0 to "
                          f"{vocab - 1})", param="logit_bias")
    if asked.echo and "logprobs" in asked.given and generator.generation.encoder is not None:
        raise OpenAIError(f"{generator.name} is an encoder-decoder: its prompt is its encoder's source, which has no "
                          "log-probabilities; leave out echo or logprobs", param="echo")


def _tool_syntax(served, asked: TextRequest):
    """The model's tool-call syntax where the request gives tools (infer/model/tool_calls.py), None where it gives
    none; a template with no tool syntax, or one ptx does not read, is OpenAI's 400 on tools."""
    if asked.tools is None:
        return None
    if not reads_tools(served.text.chat_template):
        raise OpenAIError(f"{served.name}'s chat template has no tool syntax (it never renders tools), so the model "
                          "cannot call them: leave out tools", param="tools")
    syntax = syntax_of(served.text)
    if syntax is None:
        raise OpenAIError(f"{served.name}'s chat template renders tools in a call syntax ptx does not read (it reads "
                          "Hermes' <tool_call> of Qwen2.5 and Qwen3, Llama 3.1's JSON, Mistral v0.3's [TOOL_CALLS] "
                          "list and Mistral's later [TOOL_CALLS]name[ARGS]): leave out tools", param="tools")
    return syntax


def _check_grammar(served, asked: TextRequest) -> None:
    """The response_format's schema compiled for the model's tokenizer (kept for its answers): else OpenAI's 400
    with the grammar library's reason."""
    grammar = asked.given.get("grammar")
    if grammar is None:
        return
    from ptx.infer.model import grammar as grammars

    param = "tools" if asked.tools is not None and asked.tools.forced else "response_format"
    try:
        grammars.check(grammar, served.text, served.generator.vocab or served.text.vocab_size,
                       sorted(set(end_ids(served.model, served.text))))
    except (GrammarError, MissingExtraError) as exc:
        raise OpenAIError(f"{param}: {exc}", param=param) from None


def _usage(prompts: list[list[int]], made: Answers, asked: TextRequest) -> dict:
    """OpenAI's usage: each prompt counted once, every answer's tokens (none for an echo of the prompt alone)."""
    return usage(sum(map(len, prompts)), 0 if _prompt_only(asked) else sum(len(a.tokens) for a in made))


async def _events(served, reply: Reply, prompts, sampling: Sampling, asked: TextRequest, observer, started: float):
    """The stream's server-sent events: a chat's role first (a completion's echoed prompt, with its
    log-probabilities once the prompt has run where they are asked), then each answer's text as it is whole
    (with its tokens' log-probabilities where asked), each answer's end with its finish_reason, the usage where
    asked (stream_options.include_usage), [DONE]."""
    status = None
    try:
        rows = len(prompts) * asked.n
        if reply.kind == "chat":
            for row in range(rows):
                yield reply.chunk(row, "", first=True)
        elif asked.echo and sampling.logprobs is None:
            for row in range(rows):
                yield reply.chunk(row, _echoed(served, asked, row))
        offsets = [0] * rows  # a completion's text_offset goes on from chunk to chunk
        syntax = _reading_calls(served, asked)
        calls = None if syntax is None else _CallChunks(reply, syntax, rows, asked.tools.parallel)
        async with aclosing(_answers(served, prompts, sampling, asked)) as items:  # a client gone: decoding stops
            async for item in items:
                if isinstance(item, Prompted):
                    for row, taken in enumerate(item.logprobs):
                        lead = prompts[row // asked.n][0]
                        logprobs = completion_logprobs(taken[1:], served.text.token_bytes, lead=lead)
                        offsets[row] += sum(map(len, logprobs["tokens"]))
                        yield reply.chunk(row, _echoed(served, asked, row), logprobs=logprobs)
                elif isinstance(item, Piece):
                    if _prompt_only(asked):  # the one token made is left out
                        continue
                    logprobs = _piece_logprobs(served, reply, sampling, item, offsets[item.row])
                    if logprobs is not None and "tokens" in logprobs:
                        offsets[item.row] += sum(map(len, logprobs["tokens"]))
                    if calls is None:
                        yield reply.chunk(item.row, item.text, logprobs=logprobs)
                    else:
                        for chunk in calls.feed(item.row, item.text, logprobs):
                            yield chunk
                else:
                    for chunk in calls.finish() if calls is not None else ():
                        yield chunk
                    for row, answer in enumerate(item):
                        reason = "tool_calls" if calls is not None and calls.called(row) else answer.finish_reason
                        yield reply.chunk(row, None, "length" if _prompt_only(asked) else reason)
                    if asked.include_usage:
                        yield reply.usage_chunk(_usage(prompts, item, asked))
        yield DONE
    except RequestError as exc:
        status = exc.status
        yield event(_openai(exc).document())
    except Exception as exc:  # noqa: BLE001 - the runtime failed after the 200 was sent: said in the stream
        status = 500
        yield event(OpenAIError(f"generation failed: {first_line(exc)}", 500).document())
    finally:
        observer.done(time.perf_counter() - started, status)


class _CallChunks:
    """A streamed chat's rows read for tool calls (infer/model/tool_calls.py's streams): each piece's text that is
    sure to be text goes out as content (with the piece's logprobs), each call once its block closes, as OpenAI
    streams a call (its id and name, then its arguments), numbered in its answer; the piece's logprobs follow in
    a chunk of their own. ``parallel`` False: a row's first call alone goes out (parallel_tool_calls)."""

    def __init__(self, reply: Reply, syntax, rows: int, parallel: bool = True):
        self.reply, self.streams = reply, [syntax.stream() for _ in range(rows)]
        self.counts, self.parallel = [0] * rows, parallel

    def feed(self, row: int, text: str, logprobs: dict | None) -> list[bytes]:
        chunks = self._said(row, self.streams[row].feed(text))
        if logprobs is not None:  # the piece's tokens', apart: its text may be held back or be a call's
            chunks.append(self.reply.chunk(row, "", logprobs=logprobs))
        return chunks

    def finish(self) -> list[bytes]:
        return [chunk for row, stream in enumerate(self.streams) for chunk in self._said(row, stream.finish())]

    def called(self, row: int) -> bool:
        return self.counts[row] > 0

    def _said(self, row: int, events: list) -> list[bytes]:
        chunks = []
        for event_ in events:
            if isinstance(event_, str):
                chunks.append(self.reply.chunk(row, event_))
                continue
            if self.counts[row] and not self.parallel:
                continue
            chunks += [self.reply.delta_chunk(row, delta) for delta in streamed_call(self.counts[row], event_)]
            self.counts[row] += 1
        return chunks


def _piece_logprobs(served, reply: Reply, sampling: Sampling, piece: Piece, offset: int) -> dict | None:
    """A streamed piece's tokens' log-probabilities, in its kind's shape (None where none were asked); a
    completion's text offsets count on from ``offset``, as in the whole answer."""
    if sampling.logprobs is None:
        return None
    if reply.kind == "chat":
        return chat_logprobs(piece.logprobs, served.text.token_bytes)
    return completion_logprobs(piece.logprobs, served.text.token_bytes, offset)
