"""What went wrong, in words an artist can act on.

The server's `error` codes (docs/protocol.md) and the plugin's own failures become one
sentence each; the server's technical message is kept only where it helps (it names sizes
and limits), never a traceback.
"""

from __future__ import annotations

from shared import errors as codes

# Failures found by the plugin itself, before or after talking to the server.
UNREACHABLE = "unreachable"
NOT_UNDERPAINT = "not_underpaint"  # something else answers at the address
CONNECTION_LOST = "connection_lost"  # the connection died while a job ran: the server stopped
SERVER_BACK = "server_back"  # ... and the plugin is connected again
SERVER_CHANGED = "server_changed"  # the artist connected to another server while a job ran
DISCONNECTED = "disconnected"
NO_MODEL = "no_model"
NO_DOCUMENT = "no_document"
SELECTION_OUTSIDE = "selection_outside"
NO_RESULT = "no_result"
TOO_MANY_REGIONS = "too_many_regions"
NO_LAYER = "no_layer"
TOO_MANY_CONTROLS = "too_many_controls"
NO_CONTROL_LAYER = "no_control_layer"
BAD_CONTROL = "bad_control"
TOO_MANY_REFERENCES = "too_many_references"
NO_REFERENCE_LAYER = "no_reference_layer"
BAD_REFERENCE = "bad_reference"
UNREADABLE_PICTURE = "unreadable_picture"
PLUGIN_FAULT = "plugin_fault"
NO_STYLE_FOLDER = "no_style_folder"
NO_STYLE_NAME = "no_style_name"
NO_PICTURES = "no_pictures"  # training (training.py)
NO_TRIGGER = "no_trigger"
TRIGGER_ONE_WORD = "trigger_one_word"
TOO_MANY_PICTURES = "too_many_pictures"
PICTURES_TOO_LARGE = "pictures_too_large"
TRAINING_RUNS = "training_runs"

_SENTENCES = {
    codes.BAD_REQUEST: "The server did not understand the request. Check the settings.",
    codes.TOO_LARGE: "The image or selection is too large for the server.",
    codes.UNKNOWN_MODEL: "The server has no model of that name any more. Pick another model.",
    codes.MODEL_BROKEN: "The model could not be loaded; its file may be damaged. Pick another model.",
    codes.UNSUPPORTED: "The server cannot do this with the chosen model.",
    codes.UNAUTHORIZED: "The server refused the connection: the access token is missing or wrong.",
    codes.PROTOCOL_MISMATCH: "The plugin and the server are different versions. Update both.",
    codes.EMPTY_SELECTION: "The selection is empty. Select the area to repaint first.",
    codes.NOT_FOUND: "That job has already finished.",
    codes.BUSY: "The server is busy: it has too many jobs or connections. Wait a moment and try again.",
    codes.OUT_OF_MEMORY: "The graphics card ran out of memory. Try a smaller image, selection or batch.",
    codes.INTERNAL: "The server failed on this job. Its log has the details.",
    UNREACHABLE: "Cannot reach the server{at}. Is it running?",
    NOT_UNDERPAINT: "Something{at} is not an Underpaint server. Check the address and port.",
    CONNECTION_LOST: "The server stopped while generating. Reconnecting…",
    SERVER_BACK: "The server stopped while generating; it is running again. Generate again.",
    SERVER_CHANGED: "The job was left behind when the plugin connected to another server. Generate again.",
    DISCONNECTED: "Lost the connection to the server. Reconnecting…",
    NO_MODEL: "Pick a model first.",
    NO_DOCUMENT: "Open or create an image first.",
    SELECTION_OUTSIDE: "The selection lies outside the canvas.",
    TOO_MANY_REGIONS: "This image has as many regions as the server takes. Remove one first.",
    NO_LAYER: "Select the layer or group to make a region first.",
    TOO_MANY_CONTROLS: "This image has as many control layers as the server takes. Remove one first.",
    NO_CONTROL_LAYER: "Select the layer to use as a control first.",
    BAD_CONTROL: "That control setting cannot be used.",
    TOO_MANY_REFERENCES: "This image has as many reference pictures as the server takes. Remove one first.",
    NO_REFERENCE_LAYER: "Select the layer to use as a reference picture first.",
    BAD_REFERENCE: "That reference setting cannot be used.",
    UNREADABLE_PICTURE: "That file is not a picture Krita can read.",
    NO_RESULT: "That result is no longer in the history.",
    PLUGIN_FAULT: "The plugin failed; Krita's log has the details.",
    NO_STYLE_FOLDER: "Styles cannot be saved here: the plugin has no folder for them.",
    NO_STYLE_NAME: "Give the style a name.",
    NO_PICTURES: "Add at least one picture to train on.",
    NO_TRIGGER: "Type a trigger word: the word that calls up what was learnt in a prompt.",
    TRIGGER_ONE_WORD: "The trigger must be one word, without spaces.",
    TOO_MANY_PICTURES: "There are more pictures than one training takes. Remove some.",
    PICTURES_TOO_LARGE: "The pictures are too large together for the server. Remove some.",
    TRAINING_RUNS: "A training is running. Wait for it or cancel it first.",
}

# Codes whose server message carries numbers worth showing (sizes, limits, what to try).
_WITH_DETAIL = {
    PLUGIN_FAULT, codes.TOO_LARGE, codes.OUT_OF_MEMORY, codes.BAD_REQUEST, codes.UNSUPPORTED,
    codes.MODEL_BROKEN, TOO_MANY_REGIONS, TOO_MANY_CONTROLS, BAD_CONTROL, TOO_MANY_PICTURES, PICTURES_TOO_LARGE,
    TOO_MANY_REFERENCES, BAD_REFERENCE,
}


def artist_message(code: str, detail: str | None = None, address: str | None = None) -> str:
    """One or two sentences for `code`; `detail` (the server's message) is appended where useful;
    `address` (host:port) is named where it helps."""
    sentence = _SENTENCES.get(code, "Something went wrong.").format(at=f" at {address}" if address else "")
    if detail and (code in _WITH_DETAIL or code not in _SENTENCES):
        detail = detail.strip().rstrip(".")
        return f"{sentence} ({detail[:1].upper()}{detail[1:]}.)"
    return sentence


class UserError(Exception):
    """A failure the artist must see; `str()` is the sentence."""

    def __init__(self, code: str, detail: str | None = None):
        super().__init__(artist_message(code, detail))
        self.code = code
