"""What training learns and how: the learned team (graph policy + CacheFuser) and REINFORCE."""

from gcache.training.reinforce import MovingAverageBaseline, group_mean_baseline, reinforce_loss
from gcache.training.team import GraphDraw, Team, seeded_generator

__all__ = ["GraphDraw", "MovingAverageBaseline", "Team", "group_mean_baseline", "reinforce_loss",
           "seeded_generator"]
