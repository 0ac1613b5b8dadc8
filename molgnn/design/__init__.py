"""Multi-objective selection for the design loop: objectives of screened molecules, Pareto ranks, diversity."""
