# Entry point: Snakemake finds this file first. The workflow itself is in workflow/; `rule all` lives here
# because rules that come in through `include:` never become the default target.


include: "workflow/Snakefile"


rule all:
    """Every final output of every dataset and run (workflow/plan.py: Plan.final_outputs)."""
    input:
        final_outputs(),
    default_target: True
