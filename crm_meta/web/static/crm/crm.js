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
