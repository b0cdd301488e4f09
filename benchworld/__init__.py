"""The benchmark world and the offline simulations: the measuring bench, not the product.

``benchworld.world`` generates the synthetic captioned world (pretraining stream and the ML-ZSL
split) and pretrains the bundled tiny model on it; ``benchworld.simulation`` plays whole projects
on it (rounds, active learning, label review, the agent). Both sit beside the model core
(``assistant``) and use it; the core never imports them (an import contract in pyproject.toml), so
the library a backend loads carries no benchmark code. Only the CLI and the tests import this
package. The split follows open_clip's separation of library and training code.
"""
