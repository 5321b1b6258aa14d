"""The FP4 matmul challenge, both revisions, and the local judge."""

from fp4mm.challenge.base import ChallengeBase
from fp4mm.challenge.nvfp4 import NVFP4MatmulChallenge
from fp4mm.challenge.w4a16 import FP4MatmulChallenge

CHALLENGES = {"nvfp4": NVFP4MatmulChallenge, "w4a16": FP4MatmulChallenge}

__all__ = ["CHALLENGES", "ChallengeBase", "FP4MatmulChallenge", "NVFP4MatmulChallenge"]
