"""Memory-budgeted fine-tuning (TraDy): sparse input-channel updates of preselected layers.

Planned: channel-sparse layer wrappers, RGN layer preselection and the per-epoch resampling callback
(see METHODS.md section 1). Nothing is exported yet.
"""
