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
