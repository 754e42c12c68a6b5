"""Prompts are Python functions from (role, question, what the node received) to chat messages.

They say nothing about any model family: the tokenizer's own chat template renders them
(:func:`gcache.reasoning.render_chat`), so the same prompts serve Qwen, Llama, SmolLM or an API model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gcache.agents.roles import Role

__all__ = ["agent_messages", "verbalize_messages", "Peer", "LATENT_CONTEXT_NOTE", "WORK_NOTE", "ANSWER_NOTE",
           "is_echo"]

Peer = tuple[str, str]  # (role name, text that agent wrote)

# The fixed sentences of every prompt; an answer that repeats one of them is an echo, not a solution.
LATENT_CONTEXT_NOTE = "Your context already holds the other agents' thoughts on this question; build on them."
WORK_NOTE = "Do your part for the team, step by step and briefly."
ANSWER_NOTE = "Reason step by step, then give the final answer."


def agent_messages(
    role: Role,
    question: str,
    *,
    answer_instruction: str,
    peers: Sequence[Peer] = (),
    latent_context: bool = False,
    final: bool = False,
) -> list[dict]:
    """Chat messages for one agent.

    Args:
        role (Role): who the agent is.
        question (str): the task's question.
        answer_instruction (str): the task's answer-format instruction (used by answering agents).
        peers (Sequence[Peer]): texts written by predecessor agents. Default is ().
        latent_context (bool): the agent's context already holds predecessors' latent thoughts. Default is False.
        final (bool): this agent gives the team's final answer. Default is False.

    Returns:
        list[dict]: ``[{"role": "system", ...}, {"role": "user", ...}]``.
    """
    system = f"You are the {role.name} of a team of agents solving a problem together. {role.profile}"
    parts = [f"Question: {question.strip()}"]
    if latent_context:
        parts.append(LATENT_CONTEXT_NOTE)
    if peers:
        shared = "\n\n".join(f"[{name}]\n{text.strip()}" for name, text in peers)
        parts.append(f"What the other agents wrote:\n\n{shared}")
    if final:
        parts.append(f"{ANSWER_NOTE} {answer_instruction}")
    else:
        parts.append(WORK_NOTE)
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def verbalize_messages() -> list[dict]:
    """The turn that asks a local model to put the latent thoughts in its context into words.

    Used in hybrid mode: an API model cannot read a KV-cache, so the local model decodes what the latent
    agents hold into text, and that text is what the API model sees.
    """
    return [{"role": "user", "content": "Write out, briefly, the reasoning and the answer the team has reached so far."}]


def is_echo(text: str, answer_instruction: str = "") -> bool:
    """Whether an answer copies the prompt's own instructions instead of answering.

    True when the text contains one of the fixed prompt sentences (or the task's answer instruction), compared
    case- and whitespace-insensitively, or a template placeholder such as ``{NUMBER}``.
    """
    norm = " ".join(text.lower().split())
    sentences = [LATENT_CONTEXT_NOTE, WORK_NOTE, ANSWER_NOTE, verbalize_messages()[0]["content"], answer_instruction]
    if any(s and " ".join(s.lower().split()) in norm for s in sentences):
        return True
    return re.search(r"\{[A-Z][A-Z_]{2,}\}", text) is not None
