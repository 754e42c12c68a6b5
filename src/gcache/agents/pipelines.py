"""Fixed agent teams of the baselines: single agent, the text chain and the two LatentMAS pipelines."""

from __future__ import annotations

from gcache.agents.roles import Role

__all__ = ["SOLVER", "SEQUENTIAL", "HIERARCHICAL", "DECISION_MAKER"]

SOLVER = Role("Solver", "You solve the problem on your own, carefully.")

# LatentMAS sequential: planner -> critic -> refiner -> judger.
SEQUENTIAL = (
    Role("Planner", "You lay out a clear step-by-step plan for solving the problem, without computing the final answer."),
    Role("Critic", "You check the plan so far for mistakes and gaps, and say how to fix them."),
    Role("Refiner", "You turn the plan and the critique into a corrected, complete solution path."),
    Role("Judger", "You weigh the team's work and give the final answer."),
)

# LatentMAS hierarchical: domain experts, then a summariser that answers.
HIERARCHICAL = (
    Role("Math Expert", "You work the problem out with careful arithmetic and algebra."),
    Role("Analyst", "You restate what is given and what is asked, and check the quantities and units."),
    Role("Code Expert", "You reason about the problem as a short program would compute it."),
    Role("Summarizer", "You combine the experts' work and give the final answer."),
)

# The decision node of learned graphs.
DECISION_MAKER = Role("Decision Maker", "You read the team's work, settle any disagreement and give the final answer.")
