"""A chat model as users have one on disk, made in the test (nothing downloaded): a byte-level BPE tokenizer
trained with the tokenizers library on a few lines (accented letters, Japanese and an emoji among them, so
that one character spans several tokens), ChatML special tokens and a chat template, and a tiny random
Llama of that vocabulary, written together by transformers' save_pretrained as a folder (config.json,
model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json, chat_template.jinja)."""
from __future__ import annotations

from pathlib import Path

CORPUS = ["The quick brown fox jumps over the lazy dog.", "Once upon a time there was a small model.",
          "café, naïve, über, crème brûlée", "日本語のテキスト", "hello world 👋", "user assistant system"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS = 2  # <|im_end|>: the end of a turn, as Qwen2-Instruct's generation config has it
# ChatML, as Qwen2's template writes it (a default system message where the conversation has none).
CHAT_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
                 "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
POSITIONS = 128


def byte_bpe(texts, vocab: int, specials, show_progress: bool = True):
    """A byte-level BPE (GPT-2's pre-tokenizer and decoder, as Qwen2's and Llama 3's) of ``vocab`` tokens learned
    from ``texts`` by the tokenizers library, ``specials`` its first ids: every tokenizer the tests and the
    scripts make."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(specials),
                                                       show_progress=show_progress,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return bpe


def tokenizer():
    """The fast tokenizer (transformers' PreTrainedTokenizerFast over a tokenizers BPE)."""
    from transformers import PreTrainedTokenizerFast

    bpe = byte_bpe(CORPUS * 4, 320, SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE)


def llama(vocab: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=POSITIONS,
                                        initializer_range=0.2, bos_token_id=None, eos_token_id=EOS,
                                        pad_token_id=0)).eval()


def chat_folder(folder: Path) -> Path:
    """The save_pretrained folder of the model and its tokenizer."""
    words = tokenizer()
    llama(len(words)).save_pretrained(str(folder))
    words.save_pretrained(str(folder))
    return folder


# Qwen2.5-Instruct's chat template, as its tokenizer_config.json holds it: tools rendered into the system
# message, a call written as <tool_call>{"name": ..., "arguments": {...}}</tool_call>, a tool's answer as a
# user turn's <tool_response>.
QWEN25_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""
# What the tool-calling model's tokenizer learns from: the template's own words, JSON, and the lines above.
TOOL_CORPUS = CORPUS + [
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    "# Tools You may call one or more functions to assist with the user query.",
    "You are provided with function signatures within <tools></tools> XML tags:",
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call>",
    '{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": '
    '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}',
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius", "days": [1, 2, 3], "ok": true}}',
    "<tool_response> sunny, 21 degrees </tool_response> null false 0123456789",
]
TOOL_POSITIONS = 1024


def tool_tokenizer():
    """A byte-level BPE with ChatML's special tokens and Qwen2.5's <tool_call> words (added, not special: they
    are text the model writes, as Qwen2.5's tokenizer has them)."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    bpe = byte_bpe(TOOL_CORPUS * 4, 512, SPECIALS)
    bpe.add_tokens([AddedToken(word, special=False, normalized=False) for word in
                    ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=QWEN25_TEMPLATE)


def qwen2(vocab: int, seed: int = 0):
    """A tiny random Qwen2 (Qwen2.5's architecture: grouped heads, biased q/k/v, tied embeddings)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=TOOL_POSITIONS, initializer_range=0.2,
                                        tie_word_embeddings=True, bos_token_id=None, eos_token_id=EOS,
                                        pad_token_id=0)).eval()


def tool_chat_folder(folder: Path) -> Path:
    """The save_pretrained folder of a tiny Qwen2 and its tokenizer with Qwen2.5's tool-calling template."""
    words = tool_tokenizer()
    # Padded past the tokenizer as Qwen2.5's logits are (151,936 rows for 151,665 tokens, a multiple of 128 for
    # the GPU's matmul): ids no tokenizer word has are scored, and a grammar must never allow them.
    qwen2(-(-len(words) // 128) * 128).save_pretrained(str(folder))
    words.save_pretrained(str(folder))
    return folder


# Mistral 7B Instruct v0.3's chat template (its tokenizer_config.json), which renders tools, calls and tools'
# answers with control tokens ([AVAILABLE_TOOLS], [TOOL_CALLS], [TOOL_RESULTS]) and refuses a call id that is not
# nine characters.
MISTRAL_V03_TEMPLATE = """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""
# Mistral's later layout, each call "[TOOL_CALLS]name[ARGS]{...}": the assistant's and the tool's parts as Mistral
# Small 3.2's and Ministral 3's templates write them, the long default system prompt cut, the tools given in
# [AVAILABLE_TOOLS] before the last user message as its earlier templates give them.
MISTRAL_ARGS_TEMPLATE = """{{- bos_token }}
{%- set loop_messages = messages %}
{%- if messages[0]['role'] == 'system' %}
    {{- '[SYSTEM_PROMPT]' + messages[0]['content'] + '[/SYSTEM_PROMPT]' }}
    {%- set loop_messages = messages[1:] %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}
{%- for message in loop_messages %}
    {%- if message['role'] == 'user' %}
        {%- if tools is defined and tools is not none and tools|length > 0 and message == user_messages[-1] %}
            {{- '[AVAILABLE_TOOLS]' + tools|tojson + '[/AVAILABLE_TOOLS]' }}
        {%- endif %}
        {{- '[INST]' + message['content'] + '[/INST]' }}
    {%- elif message['role'] == 'assistant' %}
        {%- if message['content'] is string %}
            {{- message['content'] }}
        {%- endif %}
        {%- if message['tool_calls'] is defined and message['tool_calls'] is not none and message['tool_calls']|length > 0 %}
            {%- for tool in message['tool_calls'] %}
                {%- set arguments = tool['function']['arguments'] %}
                {%- if arguments is not string %}
                    {%- set arguments = arguments|tojson|safe %}
                {%- elif arguments == '' %}
                    {%- set arguments = '{}' %}
                {%- endif %}
                {{- '[TOOL_CALLS]' + tool['function']['name'] + '[ARGS]' + arguments }}
            {%- endfor %}
        {%- endif %}
        {{- eos_token }}
    {%- elif message['role'] == 'tool' %}
        {{- '[TOOL_RESULTS]' + message['content']|string + '[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception('Only user, assistant and tool roles are supported, got ' + message['role'] + '.') }}
    {%- endif %}
{%- endfor %}
"""
# Mistral Small 3.1's layout of the same: each call's id between its name and its arguments, which the template
# refuses where it is not nine characters, and the tool's answer after the id it answers.
MISTRAL_CALL_ID_TEMPLATE = """{{- bos_token }}
{%- set loop_messages = messages %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}
{%- for message in loop_messages %}
    {%- if message['role'] == 'user' %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- '[AVAILABLE_TOOLS]' + tools|tojson + '[/AVAILABLE_TOOLS]' }}
        {%- endif %}
        {{- '[INST]' + message['content'] + '[/INST]' }}
    {%- elif message['role'] == 'assistant' %}
        {%- if message.get('tool_calls') %}
            {%- for tool_call in message.tool_calls %}
                {{- '[TOOL_CALLS]' + tool_call.function.name }}
                {%- if not tool_call.id is defined or tool_call.id is not string or tool_call.id|length != 9 %}
                    {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
                {%- endif %}
                {{- '[CALL_ID]' + tool_call.id }}
                {{- '[ARGS]' + tool_call['function']['arguments']|tojson }}
            {%- endfor %}
            {{- eos_token }}
        {%- else %}
            {{- message['content'] + eos_token }}
        {%- endif %}
    {%- elif message['role'] == 'tool' %}
        {{- '[TOOL_RESULTS]' + message.tool_call_id + '[TOOL_CONTENT]' + message.content|string + '[/TOOL_RESULTS]' }}
    {%- endif %}
{%- endfor %}
"""
MISTRAL_CONTROLS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]",
                    "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[ARGS]", "[CALL_ID]", "[TOOL_CONTENT]",
                    "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]


def mistral_tokenizer_folder(folder: Path, template: str = MISTRAL_V03_TEMPLATE) -> Path:
    """A folder holding a tokenizer as Mistral's are laid out (its control tokens special, the first ids; a chat
    template of its, by default v0.3's), over a byte-level BPE of the tool lines: the tokenizer alone, for rendering
    and reading."""
    from transformers import PreTrainedTokenizerFast

    bpe = byte_bpe(TOOL_CORPUS * 4, 512, MISTRAL_CONTROLS)
    PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            chat_template=template).save_pretrained(str(folder))
    return folder
