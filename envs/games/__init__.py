"""Multi-turn games in the style of LMRL-Gym: questioning games, Wordle, mazes and chess endgames.

Every game is seeded, has a walkthrough (an optimal or oracle policy, in the reset info) and,
where it has one, the ground-truth answer in the reset info's `answer` for the reward models.
"""

from agentgym.registry import register


def register_game_envs() -> None:
    """Register the games of this package with agentgym's registry."""
    register(
        "twenty-questions",
        "agentgym.envs.games.twenty_questions:TwentyQuestionsEnv",
        description="Twenty Questions: ask yes/no questions about a hidden object, then name it; answered by an oracle.",
    )
    register(
        "guess-my-city",
        "agentgym.envs.games.guess_my_city:GuessMyCityEnv",
        description="Guess My City: ask about a hidden city, then name it; answered by an oracle.",
    )
    register(
        "wordle",
        "agentgym.envs.games.wordle:WordleEnv",
        description="Wordle: guess a five-letter word in six tries from per-letter feedback.",
    )
    register(
        "maze",
        "agentgym.envs.games.maze:MazeEnv",
        description="A fully observed grid maze generated from a seed: walk to the goal.",
    )
    register(
        "text-nav",
        "agentgym.envs.games.text_nav:TextNavEnv",
        description="Text navigation in a partially observed house of rooms: find the goal room.",
    )
    register(
        "chess-endgames",
        "agentgym.envs.games.chess_endgames:ChessEndgamesEnv",
        description="Chess endgames (KQ v K, KR v K, ...) against Stockfish: deliver mate.",
    )
