"""mpidec: decentralized deep-learning training on MPI."""

__version__ = "0.1.0"
