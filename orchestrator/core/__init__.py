"""Pure layer: manifest, model, revision reading, graph, planner, plan files. No database I/O."""
