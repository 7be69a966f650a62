// The date picker speaks the page's language (FAB ships bootstrap-datepicker in English only). Run
// now, before ab.js's ready handler creates the pickers.
(function () {
    if (!$.fn.datepicker || $("meta[name=crm-lang]").attr("content") === "en") { return; }
    $.fn.datepicker.dates["zh-CN"] = {
        days: ["星期日", "星期一", "星期二", "星期三", "星期四", "星期五", "星期六"],
        daysShort: ["周日", "周一", "周二", "周三", "周四", "周五", "周六"],
        daysMin: ["日", "一", "二", "三", "四", "五", "六"],
        months: ["一月", "二月", "三月", "四月", "五月", "六月", "七月", "八月", "九月", "十月", "十一月", "十二月"],
        monthsShort: ["1月", "2月", "3月", "4月", "5月", "6月", "7月", "8月", "9月", "10月", "11月", "12月"],
        today: "今天", clear: "清除", format: "yyyy-mm-dd", titleFormat: "yyyy年mm月", weekStart: 1
    };
    $.fn.datepicker.defaults.language = "zh-CN";
})();

// Reference fields: a Select2 box that pages through matching records on the server.
$(function () {
    $("select.crm-lookup").each(function () {
        var elem = $(this);
        elem.select2({
            theme: "bootstrap",
            allowClear: true,
            placeholder: elem.data("placeholder") || "",
            minimumInputLength: 0,
            ajax: {
                url: elem.data("url"),
                dataType: "json",
                delay: 250,
                data: function (params) { return {q: params.term || "", page: params.page || 1}; },
                processResults: function (data) { return data; }
            }
        });
    });
});

// Masked values: "reveal" asks the server for the full value (allowed roles only; every reveal is audited).
$(function () {
    $(".crm-reveal-btn").on("click", function () {
        var btn = $(this), box = btn.closest(".crm-reveal");
        $.ajax({
            url: btn.data("url"), method: "POST", dataType: "json",
            headers: {"X-CSRFToken": box.data("csrf")}
        }).done(function (data) {
            $("#crm-revealed-" + btn.data("field")).text(data.value === null ? "" : data.value);
        }).fail(function (xhr) {
            var msg = (xhr.responseJSON && xhr.responseJSON.message) || xhr.statusText;
            $("#crm-revealed-" + btn.data("field")).text(msg);
        });
    });
});

// Kanban boards: drop a card on another column → POST …/transition; refused moves say what is missing.
$(function () {
    var board = $(".crm-board");
    if (!board.length || board.data("can-move") !== "yes") { return; }
    var dragged = null;
    board.on("dragstart", ".crm-card", function (e) {
        dragged = $(this);
        e.originalEvent.dataTransfer.setData("text/plain", String(dragged.data("id")));
    });
    board.on("dragover", ".crm-board-column", function (e) { e.preventDefault(); });
    board.on("drop", ".crm-board-column", function (e) {
        e.preventDefault();
        var column = $(this), card = dragged, target = String(column.data("state"));
        if (!card || card.closest(".crm-board-column").is(column)) { return; }
        var source = card.closest(".crm-board-column"), id = card.data("id");
        $(".crm-board-error").hide();
        $.ajax({
            url: board.data("api") + id + "/transition", method: "POST", contentType: "application/json",
            data: JSON.stringify({to: target, field: board.data("field")}), dataType: "json",
            headers: {"X-CSRFToken": board.data("csrf")}
        }).done(function () {
            column.find(".crm-board-cards").prepend(card);
            column.find(".crm-board-count").text(parseInt(column.find(".crm-board-count").text(), 10) + 1);
            source.find(".crm-board-count").text(parseInt(source.find(".crm-board-count").text(), 10) - 1);
        }).fail(function (xhr) {
            // {"_": [what is missing, in words], "<field>": [messages]}: fields named by their labels; the
            // "fill in and move" link only when the move is allowed and waits on values of other fields
            var body = xhr.responseJSON || {}, msg = body.message, labels = board.data("labels") || {},
                field = board.data("field"), missing = false;
            if (msg && typeof msg === "object") {
                var keys = Object.keys(msg).filter(function (k) { return k !== "_"; });
                missing = keys.some(function (k) { return k !== field; });
                msg = (msg._ || []).concat(keys.filter(function (k) { return !(msg._ || []).length || k === field; })
                    .map(function (k) {
                        var text = [].concat(msg[k]).join(" ");
                        return k === field ? text : (labels[k] || k) + "：" + text;
                    })).join(" ");
            }
            $(".crm-board-message").text(msg || xhr.statusText);
            $(".crm-board-fill").attr("href", board.data("move") + id + "/" + field + "/" + target).toggle(missing);
            $(".crm-board-error").show();
        });
    });
});

// Date fields (FAB's bootstrap-datepicker 1.10 on the .appbuilder_date wrapper): the picker learns a
// typed date on keyup only, and when the field loses focus it writes back the date it knows
// (forceParse) — so a date that arrived without a keyup (pasted, autofilled, from an input method,
// Playwright's fill) was wiped on the way to the submit button. Tell the picker on every input event.
$(function () {
    $(document).on("input", ".appbuilder_date input, .appbuilder_datetime input", function () {
        var picker = $(this).closest(".appbuilder_date, .appbuilder_datetime");
        if (picker.data("datepicker")) { picker.datepicker("update"); }
    });
});
