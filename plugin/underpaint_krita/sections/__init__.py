"""The docker's sections, top to bottom: the style, where the server is, the prompt, how to
generate, the Generate buttons and Live with the job's progress, the advanced settings, regions,
control layers, upscaling, the results.

Each section builds its widgets, shows the controller's state in `refresh()` and calls the
controller's actions; a section holding part of the settings `load`s and `store`s that part.
No logic lives here. The docker (docker.py) stacks the sections and tells them when to refresh.
"""
