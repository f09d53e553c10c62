"""Everything that runs experiments, in parts with one-way doors (CONTRIBUTING.md, "Layout"):

    cli -> sweep, report -> deploy -> training -> evaluation -> data -> base

The base modules beside this file (`errors`, `records`, `cpu`) serve every part."""
