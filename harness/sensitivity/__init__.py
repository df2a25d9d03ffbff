"""`harness sensitivity`: which nodes must stay in float, ranked by the mAP they cost on the target.

Built on harness.quant (calibrate once, write_qdq per variant) and harness.fidelity (COCO matches
re-weighted by the paired bootstrap: ΔmAP with an interval per variant in well under a second).

Modules, one job each:
    tensor_error  per-node SQNR of the all-int8 model vs fp32 (ONNX Runtime's qdq_loss_debug)
    structure     head/decoder-side nodes, convs (depthwise or not) with outlier channel ranges
    shortlist     which nodes get a ΔmAP measurement (structure first, then SQNR), top_k
    scoring       one model on the target: subset mAP, COCO matches, img/s; paired comparisons
    search        settings, variant keys, the mAP cost of a node and the greedy restore's order
    store         the resumable results file (one JSON line per finished measurement)
    agreement     SQNR ranking vs mAP ranking: top-k overlap, Spearman
    pareto        mAP vs img/s front and its plot
    outputs       sensitivity.csv / .md, pareto.png, exclude.txt
    run           the flow, from request to output folder
"""
