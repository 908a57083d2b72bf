"""Labelled datasets on disk: reading nnU-Net-style folders, label tables and modality hints.

Both training and evaluation read datasets through this layer (it sits below both and imports
neither): :mod:`.dataset` finds the cases of a dataset folder, :mod:`.labels` turns a label table
into prompts, :mod:`.checks` compares headers and label values, :mod:`.modality` reads the
modality text of dataset.json. Importing it needs neither torch nor SimpleITK.
"""
