"""The backends: one module or package each, importing only coord's contract.

Each implements ``coord.Store``'s underscored methods over one kind of
store and translates its client library's errors at one boundary. Which
scheme opens which backend is the table in ``coord._registry``.
"""
