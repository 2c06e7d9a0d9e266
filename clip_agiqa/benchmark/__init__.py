"""The repeated-split benchmark made of runs: ``plan`` (splits, configs, roots, protocol; every refusal before
any fit), ``run`` (each split as its own ``clip-agiqa fit`` then ``clip-agiqa test`` processes, up to ``--jobs``
at once) and ``results`` (the results CSV, statistics, markdown, the cross-dataset matrix; shared with
``clip-agiqa compare``). ``clip_agiqa.benchmark`` is the command that ties them."""
