"""Membership: who is in the mesh and who is alive (SWIM), as a pure state machine plus a simulated network."""

from meshaios.membership.simnet import SimNet
from meshaios.membership.swim import Action, Member, MemberChanged, MemberState, Send, Swim, SwimConfig

__all__ = ["Action", "Member", "MemberChanged", "MemberState", "Send", "SimNet", "Swim", "SwimConfig"]
